"""The run folder: the files a training run writes, and every check made before using them.

A run folder holds:

* ``config.json`` -- the :class:`~lstm.lm.config.TrainConfig`, the corpus's digest, the world
  size, the device and the versions;
* ``model.safetensors`` -- the weights (what ``evaluate`` and ``generate`` read), with the
  configuration they were trained with;
* ``training-state.safetensors`` -- everything a resume needs, self-contained: weights, Adam's
  state, every process's RNG state and carried state, the step and the metrics so far (less
  what the clock measured, :data:`CLOCK_FIELDS`: a resumed run ends with the same bytes as an
  uninterrupted one);
* ``metrics.jsonl`` -- one JSON record per report; ``curves.png`` -- training and validation BPC.

Every file is written atomically, the training state first, so a folder left by a run killed
at any moment resumes from its last checkpoint. Nothing read is trusted: ``config.json`` must
describe a valid configuration, and a safetensors file must pass its checksum and hold exactly
the tensors the configuration's model has, or a :class:`~lstm.lm.files.CheckpointError` names
the file and the problem.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import lstm
from lstm._atomic import write_figure, write_json, write_text
from lstm.lm.config import TrainConfig
from lstm.lm.corpus import Corpus
from lstm.lm.files import CheckpointError, load_tensors, read_info, read_json, save_tensors
from lstm.lm.model import ByteModel, build_model

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training-state.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
RUN_FILES = (CONFIG_FILE, MODEL_FILE, STATE_FILE, METRICS_FILE, CURVES_FILE)
"""The files a run writes; ``--force`` removes exactly these."""

MODEL_KIND = "lstm-byte-model/1"
STATE_KIND = "lstm-training-state/1"
"""The format tags of the two safetensors files (see :func:`lstm.lm.files.load_tensors`)."""

CLOCK_FIELDS = ("tokens_per_second",)
"""Fields of a metrics record read off the clock. The training state leaves them out, so that it
depends on the training alone; ``metrics.jsonl`` keeps them, and a resume takes them back from
there."""


def run_name(cell: str) -> str:
    """A cell's name as a folder name: ``package.module.Class`` for ``package.module:Class``
    (no colon in a path), a registered name as it is."""
    return cell.replace(":", ".")


def default_path(config: TrainConfig) -> Path:
    """The run folder when ``--out`` is not given: ``runs/CELL-hHIDDEN-sSEED`` (CELL as
    :func:`run_name` writes it)."""
    return Path("runs") / f"{run_name(config.cell)}-h{config.hidden}-s{config.seed}"


@dataclass(frozen=True)
class Checkpoint:
    """What ``training-state.safetensors`` holds: everything a resume needs.

    Attributes
    ----------
    step : int
        The steps trained when it was written.
    weights : dict of str to Tensor
        The model's ``state_dict()``.
    optimiser : dict
        The optimiser's ``state_dict()``: ``{"state": {index: {name: Tensor}},
        "param_groups": [...]}``.
    rng : dict of str to Tensor
        ``"cpu"`` (and ``"cuda"`` where trained on CUDA): one RNG state per process, each of
        shape (world_size, n).
    carry : tuple of Tensor
        The state carried into the next window, of every process's streams in rank order along
        dim -2 (empty at the start of a pass).
    metrics : list of dict
        The records so far.
    pending : tuple of (float, int)
        Training bits per character summed since the last record, and the steps summed.
    """

    step: int
    weights: dict[str, Tensor]
    optimiser: dict[str, Any]
    rng: dict[str, Tensor]
    carry: tuple[Tensor, ...]
    metrics: list[dict[str, Any]]
    pending: tuple[float, int]


@dataclass(frozen=True)
class LoadedRun:
    """A trained model with its configuration.

    Attributes
    ----------
    config : TrainConfig
    model : ByteModel
        In eval mode, on the requested device.
    step : int
        The training step the weights are from.
    corpus : dict
        ``source``, ``sha256``, ``bytes``, ``description`` of the training data.
    """

    config: TrainConfig
    model: ByteModel
    step: int
    corpus: dict[str, Any]


@contextmanager
def reading(name: str) -> Iterator[None]:
    """Turn what goes wrong while using a checkpoint's contents into one ``CheckpointError``.

    Parameters
    ----------
    name : str
        The file, as the message names it.

    Raises
    ------
    CheckpointError
        ``"NAME: incomplete or incompatible (...)"`` for a missing entry, a wrong type or shape
        (a ``CheckpointError`` raised inside passes unchanged).
    """
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{name}: incomplete or incompatible ({error!r})") from None


def load_weights(model: ByteModel, tensors: dict[str, Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model``, refusing missing, unexpected or misshapen entries.

    Raises
    ------
    CheckpointError
        Naming ``source`` and the entries that do not fit.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: incompatible with the configuration; missing {missing}, "
            f"unexpected {unexpected}"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: expected {name} of shape {tuple(expected[name].shape)}, "
                f"got {tuple(tensor.shape)}"
            )
    model.load_state_dict(tensors)


def load_run(folder: str | Path, device: torch.device | None = None) -> LoadedRun:
    """Load the model of a run folder written by ``python -m lstm train``.

    Parameters
    ----------
    folder : str or Path
        The run folder (``--out`` of the training run).
    device : torch.device, optional
        Where to put the model (default: the CPU).

    Raises
    ------
    CheckpointError
        If the folder, its configuration or its weights are missing, damaged or do not match.
    """
    run = RunFolder(Path(folder))
    _check_is_run(run.path)
    config, saved = run.read_config()
    tensors, info = load_tensors(run.path / MODEL_FILE, kind=MODEL_KIND)
    if not isinstance(info, dict) or not _same_model(config, info.get("train")):
        raise CheckpointError(
            f"{run.path / MODEL_FILE} was not written with {run.path / CONFIG_FILE}'s configuration"
        )
    model = build_model(config)
    load_weights(model, tensors, run.path / MODEL_FILE)
    model.to(device or torch.device("cpu")).eval()
    return LoadedRun(config, model, int(info.get("step", 0)), dict(saved.get("corpus", {})))


def _check_is_run(path: Path) -> None:
    """Refuse a path that is not a run folder, saying which one to give instead.

    Raises
    ------
    CheckpointError
        For a file (its folder, if it is a run's file), a ``compare`` folder (its runs), a
        folder without ``config.json``, or nothing at all.
    """
    if path.is_file():
        hint = (
            f"; pass its folder: --checkpoint {path.parent}"
            if (path.parent / CONFIG_FILE).is_file()
            else ""
        )
        raise CheckpointError(f"--checkpoint expects a run folder, got the file {path}{hint}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    if (path / CONFIG_FILE).is_file():
        return
    runs = sorted(child for child in path.iterdir() if (child / CONFIG_FILE).is_file())
    if runs:
        kind = "a compare folder" if (path / "compare.json").is_file() else "a folder of runs"
        names = ", ".join(f"--checkpoint {child}" for child in runs)
        raise CheckpointError(f"{path} is {kind}, not a run; pass one of its runs: {names}")
    raise CheckpointError(
        f"{path} is not a run folder (no {CONFIG_FILE}); pass the --out of a train run"
    )


def _same_model(config: TrainConfig, written: Any) -> bool:
    """Whether the configuration saved with the weights describes ``config``'s model.

    A resumed run may change the fields of :data:`~lstm.lm.config.RESUMABLE` (``--steps``,
    ``--threads``, ...); its weights then carry the new values, ``config.json`` the first.
    """
    if not isinstance(written, dict):
        return False
    try:
        return not config.differences(TrainConfig.from_json(written))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class RunFolder:
    """The folder of one training run (``--out``): its files, checks, reads and writes.

    Attributes
    ----------
    path : Path
    """

    path: Path

    def check_new(self, *, force: bool) -> None:
        """Refuse a path that is not a folder, or a run folder in use unless ``force``.

        Raises
        ------
        ValueError
            If the path is a file, or a non-empty folder and ``force`` is false.
        """
        self._check_is_folder()
        if self.path.is_dir() and any(self.path.iterdir()) and not force:
            raise ValueError(
                f"run folder {self.path} already exists and is not empty; pass --resume to "
                "continue it or --force to replace it"
            )

    def check_resumable(
        self, config: TrainConfig, corpus: Corpus, world_size: int
    ) -> Checkpoint | None:
        """Check that ``config`` may continue this run, and read its checkpoint.

        A folder without ``config.json`` (a run killed before it wrote anything) or without a
        training state resumes from step 0. Nothing is written.

        Returns
        -------
        Checkpoint or None
            ``None`` where there is no checkpoint yet.

        Raises
        ------
        ValueError
            If the saved configuration differs in a field that shapes the weights, the data
            has another SHA-256, or the run had another number of processes
            (:class:`CheckpointError` for damaged files).
        """
        self._check_is_folder()
        if not (self.path / CONFIG_FILE).exists():
            return None
        saved_config, saved = self.read_config()
        changed = config.differences(saved_config)
        if changed:
            raise ValueError(
                f"cannot resume {self.path} with a different configuration: {'; '.join(changed)}"
            )
        self._check_same_run(saved, corpus, world_size)
        try:
            return self.load_checkpoint()
        except CheckpointError as error:
            raise CheckpointError(f"{error}; {self._what_is_left()}") from None

    def _what_is_left(self) -> str:
        """After a damaged training state: whether the weights are intact, and what to do."""
        try:
            _, info = load_tensors(self.path / MODEL_FILE, kind=MODEL_KIND)
        except CheckpointError:
            return f"to train again from step 0: --out {self.path} --force (replaces the run)"
        step = info.get("step", "?") if isinstance(info, dict) else "?"
        return (
            f"{self.path / MODEL_FILE} is intact (step {step}): evaluate and generate still "
            f"read it; to train again from step 0: --out {self.path} --force (replaces the run)"
        )

    def _check_is_folder(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} exists and is not a folder")

    def _check_same_run(self, saved: dict[str, Any], corpus: Corpus, world_size: int) -> None:
        """Refuse other data or another number of processes than the saved run's."""
        if saved.get("corpus", {}).get("sha256") != corpus.sha256:
            raise ValueError(
                f"cannot resume {self.path}: its data was "
                f"{saved.get('corpus', {}).get('description')} with another SHA-256 than "
                f"{corpus.description}"
            )
        if saved.get("world_size") != world_size:
            raise ValueError(
                f"cannot resume {self.path}: it ran on {saved.get('world_size')} process(es), "
                f"expected the same, got {world_size}"
            )

    def prepare(self, *, force: bool) -> None:
        """Create the folder; remove a cut-short write's leftovers, and the run files if ``force``.

        Files other than :data:`RUN_FILES` (and their temporary files) are left alone.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if force:
                (self.path / name).unlink(missing_ok=True)
            for leftover in self.path.glob(f".{name}.*.tmp"):  # a write cut short by a kill
                leftover.unlink()

    def has_config(self) -> bool:
        """Whether ``config.json`` exists."""
        return (self.path / CONFIG_FILE).exists()

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The configuration and the whole saved run description from ``config.json``.

        Raises
        ------
        CheckpointError
            If the file is missing, not JSON, or not a valid configuration.
        """
        saved = read_json(self.path / CONFIG_FILE, "run configuration")
        try:
            return TrainConfig.from_json(saved["train"]), saved
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{self.path / CONFIG_FILE}: not a valid run configuration ({error})"
            ) from None

    def latest_config(self) -> TrainConfig:
        """The configuration the run last trained with.

        A resume may change the fields of :data:`~lstm.lm.config.RESUMABLE` (``--steps``,
        ...): the weights carry the values they were trained with, ``config.json`` the first
        leg's. So: the configuration saved with the weights where they can be read, else
        ``config.json``'s (a damaged weights file is reported by what reads it next).

        Raises
        ------
        CheckpointError
            If ``config.json`` is missing or damaged.
        """
        config, _ = self.read_config()
        try:
            info = read_info(self.path / MODEL_FILE, kind=MODEL_KIND)
            return TrainConfig.from_json(info["train"])
        except (CheckpointError, KeyError, TypeError, ValueError):
            return config

    def write_config(
        self, config: TrainConfig, corpus: Corpus, world_size: int, device: torch.device
    ) -> None:
        """Write ``config.json``: the configuration, the corpus, processes, device, versions."""
        write_json(
            self.path / CONFIG_FILE,
            {
                "train": config.to_json(),
                "corpus": {
                    "source": corpus.source,
                    "description": corpus.description,
                    "sha256": corpus.sha256,
                    "bytes": corpus.data.numel(),
                },
                "world_size": world_size,
                "device": str(device),  # what --device auto resolved to
                "versions": {
                    "lstm": lstm.__version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
            },
        )

    def save_checkpoint(self, checkpoint: Checkpoint, config: TrainConfig) -> None:
        """Write the training state, then the weights, then the metrics."""
        tensors = {f"model/{name}": tensor for name, tensor in checkpoint.weights.items()}
        for index, state in checkpoint.optimiser["state"].items():
            tensors.update({f"optimiser/{index}/{name}": value for name, value in state.items()})
        tensors.update({f"rng/{name}": value.cpu() for name, value in checkpoint.rng.items()})
        tensors.update({f"carry/{index}": tensor for index, tensor in enumerate(checkpoint.carry)})
        info = {
            "step": checkpoint.step,
            "param_groups": checkpoint.optimiser["param_groups"],
            "carry": len(checkpoint.carry),
            "metrics": [_without_clock(record) for record in checkpoint.metrics],
            "pending": list(checkpoint.pending),
        }
        save_tensors(self.path / STATE_FILE, tensors, kind=STATE_KIND, info=info)
        model_info = {"step": checkpoint.step, "train": config.to_json()}
        save_tensors(self.path / MODEL_FILE, checkpoint.weights, kind=MODEL_KIND, info=model_info)
        self.write_metrics(checkpoint.metrics)

    def load_checkpoint(self) -> Checkpoint | None:
        """Read ``training-state.safetensors`` (``None`` if there is none).

        Raises
        ------
        CheckpointError
            If the file is damaged, or lacks an entry a checkpoint has.
        """
        if not (self.path / STATE_FILE).exists():
            return None
        tensors, info = load_tensors(self.path / STATE_FILE, kind=STATE_KIND)
        with reading(STATE_FILE):
            optimiser_state: dict[int, dict[str, Tensor]] = {}
            for key, tensor in _prefixed(tensors, "optimiser/").items():  # "3/exp_avg": [3]
                index, name = key.split("/")
                optimiser_state.setdefault(int(index), {})[name] = tensor
            rng = {"cpu": tensors["rng/cpu"]}
            if "rng/cuda" in tensors:
                rng["cuda"] = tensors["rng/cuda"]
            bits, steps = info["pending"]
            return Checkpoint(
                step=int(info["step"]),
                weights=_prefixed(tensors, "model/"),
                optimiser={"state": optimiser_state, "param_groups": info["param_groups"]},
                rng=rng,
                carry=tuple(tensors[f"carry/{index}"] for index in range(int(info["carry"]))),
                metrics=self._with_clock(list(info["metrics"])),
                pending=(bits, steps),
            )

    def _with_clock(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records with their :data:`CLOCK_FIELDS` from ``metrics.jsonl`` where it has them.

        ``metrics.jsonl`` is written after the training state, so a run killed in between
        leaves it a checkpoint behind; the records it lacks stay without their times.
        """
        try:
            written = self.read_metrics()
        except (OSError, ValueError):  # missing or damaged: the times are lost, nothing else
            return records
        timed: dict[int, dict[str, Any]] = {}
        for record in written:  # the final record, of the same step, has no times: skipped
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                clock = {name: record[name] for name in CLOCK_FIELDS if name in record}
                timed.update({record["step"]: clock} if clock else {})
        return [{**record, **timed.get(record["step"], {})} for record in records]

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Write ``metrics.jsonl``: one JSON object per line."""
        write_text(
            self.path / METRICS_FILE, "".join(json.dumps(record) + "\n" for record in records)
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``."""
        text = (self.path / METRICS_FILE).read_text()
        return [json.loads(line) for line in text.splitlines()]

    def write_results(self, records: list[dict[str, Any]], title: str) -> None:
        """Write the final ``metrics.jsonl`` and ``curves.png``."""
        self.write_metrics(records)
        self.write_curves(records, title)

    def write_curves(self, records: list[dict[str, Any]], title: str) -> None:
        """Write ``curves.png`` of ``records`` (also when a run stops before its end)."""
        _plot(self.path / CURVES_FILE, records, title)


def _without_clock(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name not in CLOCK_FIELDS}


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class ValidationSeries:
    """A run's validation BPC as its charts draw it.

    Attributes
    ----------
    points : list of (int, float)
        ``(step, BPC)`` of every report during training: the first ``--eval-bytes`` bytes of
        the validation split, every ``--eval-every`` steps and at the last step.
    final : (int, float) or None
        ``(steps, BPC)`` of the whole validation split after training, by the evaluator of
        the final table (``compare``'s, ``train``'s last line); None before the run ends.
    """

    points: list[tuple[int, float]]
    final: tuple[int, float] | None


def validation_series(records: list[dict[str, Any]]) -> ValidationSeries:
    """The validation reports and the final whole-split figure of ``metrics.jsonl``'s records."""
    points = [
        (int(r["step"]), float(r["validation_bpc"])) for r in records if "validation_bpc" in r
    ]
    finals = [r for r in records if "final_validation_bpc" in r]
    final = (int(finals[-1]["step"]), float(finals[-1]["final_validation_bpc"])) if finals else None
    return ValidationSeries(points, final)


def _plot(path: Path, records: list[dict[str, Any]], title: str) -> None:
    """Training and validation BPC against the step, as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    points = [(record["step"], record["train_bpc"]) for record in records if "train_bpc" in record]
    if points:
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, label="training (running mean)")
    draw_validation(axes, validation_series(records), "validation")
    axes.set_xlabel("step")
    axes.set_ylabel("bits per character")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    write_figure(path, figure)


def draw_validation(axes: Any, series: ValidationSeries, label: str) -> None:
    """Draw a :class:`ValidationSeries` on matplotlib ``axes``: the reports as a line with
    dots, the final whole-split figure as a star of the same colour, each labelled with
    what it reads."""
    color = None
    if series.points:
        steps, values = zip(*series.points, strict=True)
        (line,) = axes.plot(steps, values, marker="o", label=f"{label}, first --eval-bytes bytes")
        color = line.get_color()
    if series.final is not None:
        axes.plot(
            *series.final,
            marker="*",
            markersize=12,
            linestyle="none",
            color=color,
            label=f"{label}, whole split (the table's)",
        )
