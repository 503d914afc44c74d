"""Training: truncated backpropagation through time, checkpoints, exact resume, many processes.

One step of :func:`train` reads window ``(step - 1) % windows`` of every stream (see
:class:`lstm.lm.corpus.Streams`), starting from the state the previous window ended in (reset
to zeros at the start of each pass), and takes one Adam step on the mean cross-entropy.

Everything that changes from step to step is a :class:`TrainingState`; a checkpoint saves all
of it (with every process's RNG state) in the run folder (:mod:`lstm.lm.run_folder`), training
state first, so a run killed at any moment resumes from its last checkpoint and ends with the
same weights as a run never interrupted. SIGINT (Ctrl-C) and SIGTERM stop it after the current
step with a checkpoint (:mod:`lstm.lm.stop`). Under ``torchrun`` every process trains on its own
streams with ``DistributedDataParallel`` (gloo on the CPU, nccl on CUDA); process 0 alone
reports and writes. Every process reads the checkpoint on resume, so ``--out`` must be a
folder they all see.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lstm.lm import threads
from lstm.lm.config import TrainConfig
from lstm.lm.corpus import Corpus, Splits, Streams, check_size, load_corpus, split
from lstm.lm.model import VOCABULARY, ByteModel, State, build_model, parameter_count
from lstm.lm.run_folder import STATE_FILE, Checkpoint, RunFolder, load_weights, reading
from lstm.lm.sample import bits_per_character
from lstm.lm.stop import Stopped, StopSignals
from lstm.registry import is_own

LOG_EVERY = 10
"""Steps per training-loss record (and per validation report, if ``eval_every`` is smaller)."""

HEARTBEAT_SECONDS = 30.0
"""Longest silence off a terminal: after this long without a line, a short progress line."""

_clock = time.monotonic  # the reporter's clock; tests put a fake one here


@dataclass(frozen=True)
class Summary:
    """What a finished training run reports.

    Attributes
    ----------
    folder : Path
    step : int
        Steps trained in all (including those before a resume).
    train_bpc, validation_bpc, test_bpc : float
        Bits per character by one evaluator (:func:`lstm.lm.sample.bits_per_character`, eval
        mode) on as many bytes of each split: the whole validation and test splits (the same
        size) and the first as many training bytes.
    tokens_per_second : float
        Training throughput of this invocation (all processes together).
    parameters : int
    """

    folder: Path
    step: int
    train_bpc: float
    validation_bpc: float
    test_bpc: float
    tokens_per_second: float
    parameters: int


@dataclass(frozen=True)
class Processes:
    """This process's place in a distributed run (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether ``torch.distributed`` is in use."""
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Whether this process reports and writes files."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's streams among all processes' ``batch_size`` streams each."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)

    @classmethod
    def from_environment(cls) -> Processes:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them."""
        try:
            return cls(
                int(os.environ.get("RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)),
            )
        except ValueError as error:
            raise ValueError(f"expected integer RANK/WORLD_SIZE/LOCAL_RANK ({error})") from None


def resolve_device(choice: str, processes: Processes) -> torch.device:
    """``"auto"`` is CUDA when available; a distributed run uses GPU ``LOCAL_RANK``."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("expected --device cuda to find a CUDA device, but none is available")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", processes.local_rank)


@dataclass
class TrainingState:
    """Everything that changes from one step to the next; a checkpoint saves all of it.

    Attributes
    ----------
    model : ByteModel
    optimiser : torch.optim.Optimizer
    carry : tuple of Tensor or None
        This process's recurrent state at the end of the last window (``None``: zeros).
    step : int
        Steps taken so far.
    metrics : list of dict
        The records so far, one per report.
    pending_bits : float
        Training bits per character summed over the steps since the last record.
    pending_steps : int
        Those steps.
    """

    model: ByteModel
    optimiser: torch.optim.Optimizer
    carry: State | None = None
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    pending_bits: float = 0.0
    pending_steps: int = 0

    def add_loss(self, bits: float) -> None:
        """Count one more step's training loss (in bits per character)."""
        self.pending_bits += bits
        self.pending_steps += 1

    def take_pending(self) -> float:
        """The mean training loss since the last record; the sums start again from zero."""
        mean = self.pending_bits / self.pending_steps
        self.pending_bits, self.pending_steps = 0.0, 0
        return mean


@dataclass(frozen=True)
class _Run:
    """What stays the same throughout one invocation of :func:`train`."""

    config: TrainConfig
    folder: RunFolder
    corpus: Corpus
    splits: Splits
    streams: Streams
    processes: Processes
    device: torch.device
    log: Callable[[str], None]

    @property
    def tokens_per_step(self) -> int:
        """Bytes predicted per step by all processes together."""
        return self.config.batch_size * self.config.seq_len * self.processes.world_size

    def bpc(self, model: ByteModel, data: Tensor) -> float:
        """Bits per character of ``data``, read as in training."""
        return bits_per_character(model, data, self.config.seq_len, self.config.batch_size)


@dataclass
class _Meter:
    """Throughput: time since the start, and since the last record."""

    started: float = field(default_factory=time.perf_counter)
    interval_start: float = field(default_factory=time.perf_counter)
    interval_steps: int = 0
    speeds: list[float] = field(default_factory=list)  # tokens/s of this invocation's records
    hinted: bool = False  # collapse_hint's note was printed (once an invocation)

    def lap(self, tokens_per_step: int) -> float:
        """Tokens per second since the last lap; a new interval starts."""
        elapsed = time.perf_counter() - self.interval_start
        speed = self.interval_steps * tokens_per_step / max(elapsed, 1e-9)
        self.interval_start, self.interval_steps = time.perf_counter(), 0
        return speed


class _Reporter:
    """Where the loop's lines go: past the progress bar on a terminal, with a heartbeat off one.

    On a terminal the bar is cleared before a line and drawn again after it, so the two never
    share a line (a line printed over the bar read ``1.85step/s]step 20/60: train ...``). Off a
    terminal there is no bar, and :meth:`after_step` prints ``step N/M, X tokens/s`` when
    :data:`HEARTBEAT_SECONDS` have passed since the last line, so a log never falls silent.

    Parameters
    ----------
    log : callable
        Receives the lines.
    bar : tqdm
        The progress bar (disabled off a terminal, or when no progress is asked for).
    heartbeat : bool
        Whether to print heartbeat lines while the bar is not shown.
    tokens_per_step : int
        For the heartbeat's speed.
    """

    def __init__(
        self, log: Callable[[str], None], bar: Any, *, heartbeat: bool, tokens_per_step: int
    ) -> None:
        self.log, self.bar, self.tokens_per_step = log, bar, tokens_per_step
        self.heartbeat = heartbeat and bar.disable
        self.step = self.line_step = int(bar.n)
        self.line_time = _clock()

    def write(self, line: str) -> None:
        """Print ``line`` on a line of its own."""
        if self.bar.disable:
            self.log(line)
        else:
            self.bar.clear()
            self.log(line)
            self.bar.refresh()
        self.line_time, self.line_step = _clock(), self.step

    def after_step(self, step: int, steps: int) -> None:
        """Note that ``step`` is done; print a heartbeat if the log has been silent too long."""
        self.step = step
        elapsed = _clock() - self.line_time
        if self.heartbeat and elapsed >= HEARTBEAT_SECONDS:
            speed = (step - self.line_step) * self.tokens_per_step / elapsed
            self.write(f"step {step}/{steps}, {speed:,.0f} tokens/s")


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Summary:
    """Train a byte model as ``config`` says, writing the run folder ``out``.

    Everything given is checked before anything is written: a bad configuration, data file or
    checkpoint leaves ``out`` as it was.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path
        Run folder. Must not exist or be empty, unless ``resume`` or ``force``.
    resume : bool
        Continue from the checkpoint in ``out`` (from step 0 if it has none yet). The
        configuration must match the saved one except for the fields in
        :data:`lstm.lm.config.RESUMABLE`, and the data must be the same bytes.
    force : bool
        Start afresh, replacing the run files in ``out`` (other files are left alone).
    progress : bool
        Show a progress bar on stderr when it is a terminal, else a line at least every
        :data:`HEARTBEAT_SECONDS` (process 0 only).
    log : callable
        Receives the report lines (process 0 only).

    Returns
    -------
    Summary

    Raises
    ------
    ValueError
        For a bad configuration, data or run folder (:class:`CheckpointError` for a damaged or
        incompatible checkpoint).
    OSError
        If the run folder cannot be written.
    """
    if resume and force:
        raise ValueError("expected at most one of --resume and --force, got both")
    run = _open_run(config, Path(out), log)
    if resume:
        saved = run.folder.check_resumable(config, run.corpus, run.processes.world_size)
        if saved is None:  # a run killed before its first checkpoint, or none at all
            run.log(f"no checkpoint in {run.folder.path}: starting at step 0")
    else:
        run.folder.check_new(force=force)
        saved = None
    state = _initial_state(config, run.processes, saved)
    _to_device(state, run.device)
    with _process_group(run.processes, run.device):
        if run.processes.leader:
            run.folder.prepare(force=force)
            if state.step == 0 or not run.folder.has_config():
                run.folder.write_config(config, run.corpus, run.processes.world_size, run.device)
        if run.processes.distributed:
            dist.barrier()
        return _loop(run, state, progress=progress and run.processes.leader)


def _open_run(config: TrainConfig, folder: Path, log: Callable[[str], None]) -> _Run:
    """Find this process's place and device, and load and check the data (nothing written)."""
    processes = Processes.from_environment()
    device = resolve_device(config.device, processes)
    corpus = load_corpus(config.data)
    streams = config.batch_size * processes.world_size
    check_size(corpus, config.seq_len, streams)
    splits = split(corpus.data)
    return _Run(
        config,
        RunFolder(folder),
        corpus,
        splits,
        Streams(splits.train, streams, config.seq_len),
        processes,
        device,
        log if processes.leader else lambda line: None,
    )


def _initial_state(
    config: TrainConfig, processes: Processes, saved: Checkpoint | None
) -> TrainingState:
    """A fresh model and optimiser from the seed, then the checkpoint's state if there is one."""
    torch.manual_seed(config.seed)
    model = build_model(config)
    state = TrainingState(model, torch.optim.Adam(model.parameters(), lr=config.lr))
    torch.manual_seed(config.seed + processes.rank)  # each process draws its own dropout masks
    if saved is not None:
        _restore(state, saved, processes.rows(config.batch_size), processes.rank)
    return state


def _restore(state: TrainingState, saved: Checkpoint, rows: slice, rank: int) -> None:
    """Load a checkpoint into the model, optimiser and RNG; take this process's carried rows."""
    with reading(STATE_FILE):
        load_weights(state.model, saved.weights, Path(STATE_FILE))
        state.optimiser.load_state_dict(saved.optimiser)
        torch.set_rng_state(saved.rng["cpu"][rank].clone())
        if "cuda" in saved.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved.rng["cuda"][rank].clone())
        carry = tuple(tensor[..., rows, :].clone() for tensor in saved.carry)
        state.carry = carry or None
        state.step, state.metrics = saved.step, list(saved.metrics)
        state.pending_bits, state.pending_steps = saved.pending


def _to_device(state: TrainingState, device: torch.device) -> None:
    """Move the model, the optimiser's state and the carried state to ``device``."""
    state.model.to(device)
    for parameter_state in state.optimiser.state.values():
        for name, value in parameter_state.items():
            if isinstance(value, Tensor) and name != "step":
                parameter_state[name] = value.to(device)
    if state.carry is not None:
        state.carry = tuple(tensor.to(device) for tensor in state.carry)


DIST_TIMEOUT_S = 300.0
"""Seconds a process waits for the others (joining, and in any collective) before it fails
with an error naming the wait, rather than hanging: ``LSTM_DIST_TIMEOUT`` overrides it. A
worker that died makes the others fail within it, and ``torchrun --max-restarts`` then
starts the group again from the last checkpoint."""


def dist_timeout() -> float:
    """:data:`DIST_TIMEOUT_S`, or ``LSTM_DIST_TIMEOUT`` (seconds > 0) where it is set."""
    text = os.environ.get("LSTM_DIST_TIMEOUT")
    if text is None:
        return DIST_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"expected LSTM_DIST_TIMEOUT in seconds > 0, got {text!r}")
    return seconds


@contextmanager
def _process_group(processes: Processes, device: torch.device) -> Iterator[None]:
    """Join the other processes for the duration (alone: nothing to join)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives (and barrier) use the current GPU
    if processes.distributed:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=dist_timeout()),
        )
    try:
        yield
    finally:
        if processes.distributed:
            dist.destroy_process_group()


def _loop(run: _Run, state: TrainingState, *, progress: bool) -> Summary:
    """Train from ``state.step`` to ``config.steps``, reporting and checkpointing as asked."""
    from tqdm import tqdm

    config, start = run.config, state.step
    network = _network(state.model, run)
    _log_start(run, state)
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=None if progress else True,  # None: shown on a terminal only
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    reporter = _Reporter(run.log, bar, heartbeat=progress, tokens_per_step=run.tokens_per_step)
    run = dataclasses.replace(run, log=reporter.write)
    meter = _Meter()
    state.model.train()
    with StopSignals() as signals:  # SIGINT, SIGTERM: stop after this step, checkpointed
        while state.step < config.steps:
            _train_step(run, network, state)
            meter.interval_steps += 1
            if _records_at(config, state.step):
                _show(bar, _record(run, state, meter))
            bar.update()
            reporter.after_step(state.step, config.steps)
            due = state.step % config.checkpoint_every == 0 or state.step == config.steps
            if due:
                _checkpoint(run, state)
            _stop_if_signalled(run, state, signals, bar, checkpointed=due)
    bar.close()
    elapsed = time.perf_counter() - meter.started
    if state.step != config.steps:  # resumed beyond --steps: nothing trained
        _checkpoint(run, state)
    return _finish(run, state, config.steps - start, elapsed)


def _stop_if_signalled(
    run: _Run, state: TrainingState, signals: StopSignals, bar: Any, *, checkpointed: bool
) -> None:
    """After a step: if a signal came (to any process), write a checkpoint and stop.

    Raises
    ------
    Stopped
        In every process, after the same step, once the checkpoint is written.
    """
    number = signals.agreed(run.processes.distributed, run.device)
    if number is None:
        return
    if not checkpointed:
        _checkpoint(run, state)
    if run.processes.leader:  # the curves so far, as a finished run leaves them
        title = f"{run.config.cell} on {run.corpus.description}, stopped at step {state.step}"
        run.folder.write_curves(state.metrics, title)
    bar.close()
    raise Stopped(
        number,
        state.step,
        run.config.steps,
        run.folder.path,
        world_size=run.processes.world_size,
        leader=run.processes.leader,
    )


def _network(model: ByteModel, run: _Run) -> nn.Module:
    """The model, wrapped in ``DistributedDataParallel`` when there are other processes."""
    if not run.processes.distributed:
        return model
    return DistributedDataParallel(
        model, device_ids=[run.device] if run.device.type == "cuda" else None
    )


def _log_start(run: _Run, state: TrainingState) -> None:
    """The first lines: what runs, the data, the processes and the folder; the engine and why."""
    config = run.config
    run.log(
        f"training {_recurrent_layer(state.model)} ({config.layers} x {config.hidden}"
        + (f", k={config.k}" if config.k else "")
        + f", {parameter_count(state.model):,} parameters) on "
        f"{run.corpus.description} with {run.processes.world_size} process(es) on "
        f"{run.device.type}; run folder {run.folder.path}"
    )
    name, reason = state.model.engine(config.batch_size, config.seq_len)
    run.log(f"engine: {name} ({reason})")
    count = torch.get_num_threads()
    if config.threads is not None:
        run.log(f"threads: {count} (--threads {config.threads})")
    else:
        default = f"{count} (torch's own count); --threads N to choose"
        run.log(f"threads: {threads.CHOSEN or default}")
    if state.step:
        run.log(f"resuming at step {state.step} of {config.steps}")


def _recurrent_layer(model: ByteModel) -> str:
    """The class that runs the recurrence, and whose it is.

    ``"this package's lstm.ArrayLSTM"`` for a cell of this package, ``"your
    mypackage.cells.MGU"`` for a user's, ``"torch.nn.LSTM via --impl torch"`` for PyTorch's
    own layer.
    """
    layer = type(model.rnn)
    if layer is nn.LSTM:
        return "torch.nn.LSTM via --impl torch"
    if not is_own(layer):
        return f"your {layer.__module__}.{layer.__qualname__}"
    return f"this package's lstm.{layer.__name__}"


def _train_step(run: _Run, network: nn.Module, state: TrainingState) -> None:
    """One Adam step on the next window of every stream."""
    step = state.step + 1
    if run.streams.starts_pass(step):
        state.carry = None
    rows = run.processes.rows(run.config.batch_size)
    inputs, targets = (part.to(run.device) for part in run.streams.window(step, rows))
    logits, carry = network(inputs, state.carry)  # (B, T, 256)
    loss = F.cross_entropy(logits.reshape(-1, VOCABULARY), targets.reshape(-1))
    state.optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    nn.utils.clip_grad_norm_(state.model.parameters(), run.config.clip)
    state.optimiser.step()
    state.carry = tuple(tensor.detach() for tensor in carry)
    state.add_loss(_mean_over_processes(loss.detach(), run.processes) / math.log(2))
    state.step = step


def _mean_over_processes(value: Tensor, processes: Processes) -> float:
    """The mean of a scalar over every process (the value itself when alone)."""
    if processes.distributed:
        dist.all_reduce(value)
        value /= processes.world_size
    return float(value)


def _records_at(config: TrainConfig, step: int) -> bool:
    """Whether ``step`` ends with a record (every :data:`LOG_EVERY` steps, and validations)."""
    report_every = min(LOG_EVERY, config.eval_every)
    return step % config.eval_every == 0 or step % report_every == 0 or step == config.steps


def _record(run: _Run, state: TrainingState, meter: _Meter) -> dict[str, Any]:
    """Append a record of the training loss since the last, validating where it is due."""
    config = run.config
    record: dict[str, Any] = {
        "step": state.step,
        "train_bpc": state.take_pending(),
        "tokens_per_second": meter.lap(run.tokens_per_step),
    }
    due = state.step % config.eval_every == 0 or state.step == config.steps  # curves end there
    if due and run.processes.leader:
        record["validation_bpc"] = run.bpc(state.model, run.splits.validation[: config.eval_bytes])
        run.log(
            f"step {state.step}/{config.steps}: train {record['train_bpc']:.3f} bpc, "
            f"validation {record['validation_bpc']:.3f} bpc, "
            f"{record['tokens_per_second']:,.0f} tokens/s"
        )
    state.metrics.append(record)
    meter.speeds.append(record["tokens_per_second"])
    if not meter.hinted:
        hint = collapse_hint(meter.speeds, torch.get_num_threads())
        if hint is not None and run.processes.leader:
            meter.hinted = True
            print(hint, file=sys.stderr)
    return record


def collapse_hint(speeds: list[float], threads: int) -> str | None:
    """A hint when training on several threads has slowed down to a third or less.

    Other work on the same cores makes every parallel step wait for its slowest thread: on a
    busy 2-core machine two threads trained eight times slower than one. ``speeds`` are the
    tokens/s of this invocation's records, oldest first; the first is left out (it includes
    the first call's set-up, a compiled engine's build). None while the latest is above a
    third of the best before it, or on one thread.

    Parameters
    ----------
    speeds : list of float
    threads : int
        Torch's threads (``torch.get_num_threads()``).

    Returns
    -------
    str or None
    """
    if threads < 2 or len(speeds) < 3:
        return None
    best, latest = max(speeds[1:-1]), speeds[-1]
    if latest * 3 > best:
        return None
    return (
        f"note: training slowed from {best:,.0f} to {latest:,.0f} tokens/s on {threads} threads: "
        "other work is using the cores, and a parallel step waits for its slowest thread; "
        "on busy cores --threads 1 is often several times faster (Ctrl-C stops with a "
        "checkpoint; resume with --threads 1)"
    )


def _show(bar: Any, record: dict[str, Any]) -> None:
    """Put a record's loss, BPC and speed on the progress bar."""
    bar.set_postfix(
        loss=f"{record['train_bpc'] * math.log(2):.3f}",  # nats, as cross_entropy gives
        bpc=f"{record['train_bpc']:.3f}",
        tokens_per_s=f"{record['tokens_per_second']:,.0f}",
    )


def _finish(run: _Run, state: TrainingState, trained: int, elapsed: float) -> Summary:
    """Train, validation and test BPC by one evaluator; the final metrics, curves and line."""
    config = run.config
    figures = dict.fromkeys(("train", "validation", "test"), math.nan)
    if run.processes.leader:
        figures = _final_figures(run, state.model)
        final = {
            "step": config.steps,
            "final_train_bpc": figures["train"],
            "final_validation_bpc": figures["validation"],
            "test_bpc": figures["test"],
        }
        title = f"{config.cell} on {run.corpus.description}"
        run.folder.write_results([*state.metrics, final], title)
    tokens_per_second = trained * run.tokens_per_step / elapsed if trained else math.nan
    speed = (
        f"{tokens_per_second:,.0f} tokens/s over this run's {trained} step{'s' * (trained != 1)} "
        f"in {elapsed:.1f}s"
        if trained
        else "no steps left to train"
    )
    run.log(
        f"done: step {config.steps}, train {figures['train']:.3f} bpc, validation "
        f"{figures['validation']:.3f} bpc, test {figures['test']:.3f} bpc (each on "
        f"{run.splits.test.numel():,} bytes, in eval mode; uniform guessing: 8.000), {speed}"
    )
    parameters = parameter_count(state.model)
    return Summary(
        run.folder.path,
        config.steps,
        figures["train"],
        figures["validation"],
        figures["test"],
        tokens_per_second,
        parameters,
    )


def _final_figures(run: _Run, model: ByteModel) -> dict[str, float]:
    """BPC of the model on as many bytes of each split, by the same evaluator.

    Validation and test are whole (:func:`lstm.lm.corpus.split` makes them the same size);
    training is its first as many bytes. Unlike the per-step ``train`` figure (a running mean
    of the training loss, with dropout, over the batches just trained), this one is measured
    like the others: eval mode, state carried across windows, the model as it ends.
    """
    size = run.splits.test.numel()
    parts = {"train": run.splits.train[:size], "validation": run.splits.validation}
    parts["test"] = run.splits.test
    return {name: run.bpc(model, data) for name, data in parts.items()}


def _gather_rows(tensor: Tensor, processes: Processes) -> Tensor:
    """Concatenate every process's ``tensor`` along dim -2 (the batch of a state)."""
    if not processes.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(processes.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=-2)


def _checkpoint(run: _Run, state: TrainingState) -> None:
    """Save the state of every process (all of them gather; process 0 writes)."""
    processes = run.processes
    device = next(state.model.parameters()).device
    # (world, n) each: one row per process, gathered through the device the backend uses
    rng = {"cpu": _gather_rows(torch.get_rng_state().to(device)[None], processes)}
    if device.type == "cuda":
        rng["cuda"] = _gather_rows(torch.cuda.get_rng_state(device).to(device)[None], processes)
    carry = () if state.carry is None else tuple(_gather_rows(t, processes) for t in state.carry)
    if not processes.leader:
        return
    checkpoint = Checkpoint(
        step=state.step,
        weights=state.model.state_dict(),
        optimiser=state.optimiser.state_dict(),
        rng=rng,
        carry=carry,
        metrics=state.metrics,
        pending=(state.pending_bits, state.pending_steps),
    )
    run.folder.save_checkpoint(checkpoint, run.config)
