"""The run folder: its files, what may replace or continue it, checkpoints, damaged files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY, assert_same_weights, run_cli, snapshot, train_args
from lstm.lm.config import TrainConfig
from lstm.lm.corpus import load_corpus
from lstm.lm.files import CheckpointError, load_tensors, save_tensors
from lstm.lm.model import build_model
from lstm.lm.run_folder import (
    MODEL_FILE,
    MODEL_KIND,
    RUN_FILES,
    STATE_FILE,
    STATE_KIND,
    Checkpoint,
    RunFolder,
    default_path,
    load_run,
    load_weights,
)
from lstm.lm.sample import bits_per_character
from lstm.lm.train import train

OLD_RUN = Path(__file__).resolve().parent / "data" / "run-0.1.0"
"""A run folder written by lstm 0.1.0 (before the run folder had a module of its own).

``run/`` is ``array``, k 2, 2 x 4, dropout 0.1, seq-len 4, batch 2, 3 steps on ``corpus.txt``,
copied as it stood after its first checkpoint (step 1, a training loss not yet recorded).
"""


def test_default_path_names_cell_width_and_seed() -> None:
    assert default_path(TrainConfig(cell="array", hidden=64, seed=3)) == Path("runs/array-h64-s3")
    spec = TrainConfig(cell="lstm.cells.mlstm:MLSTM", hidden=64)  # a class by its import path
    assert default_path(spec) == Path("runs/lstm.cells.mlstm.MLSTM-h64-s0")  # no colon


def test_check_new_refuses_a_file_and_a_folder_in_use(tmp_path: Path) -> None:
    RunFolder(tmp_path / "absent").check_new(force=False)
    RunFolder(tmp_path).check_new(force=False)  # empty
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="pass --resume to continue it or --force to replace"):
        RunFolder(tmp_path).check_new(force=False)
    RunFolder(tmp_path).check_new(force=True)
    with pytest.raises(ValueError, match=r"notes.txt exists and is not a folder"):
        RunFolder(tmp_path / "notes.txt").check_new(force=True)


def test_prepare_removes_leftovers_and_with_force_the_run_files_only(tmp_path: Path) -> None:
    for name in [*RUN_FILES, "notes.txt", f".{MODEL_FILE}.x1y2.tmp", ".notes.txt.x1y2.tmp"]:
        (tmp_path / name).write_text("x")
    RunFolder(tmp_path).prepare(force=False)  # a cut-short write's leftover goes
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*RUN_FILES, "notes.txt", ".notes.txt.x1y2.tmp"]
    )
    RunFolder(tmp_path).prepare(force=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".notes.txt.x1y2.tmp", "notes.txt"]
    RunFolder(tmp_path / "new" / "run").prepare(force=False)
    assert (tmp_path / "new" / "run").is_dir()


def _checkpoint(config: TrainConfig) -> Checkpoint:
    model = build_model(config)
    optimiser = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 3, dtype=torch.int64))[0].sum().backward()
    optimiser.step()
    return Checkpoint(
        step=7,
        weights=model.state_dict(),
        optimiser=optimiser.state_dict(),
        rng={"cpu": torch.get_rng_state()[None]},
        carry=(torch.randn(1, 2, 4), torch.randn(1, 2, 4)),
        metrics=[{"step": 5, "train_bpc": 7.5}],
        pending=(15.25, 2),
    )


def test_a_checkpoint_is_saved_in_the_0_1_0_format_and_read_back(tmp_path: Path) -> None:
    config = TrainConfig(hidden=4, lr=0.01)
    saved = _checkpoint(config)
    RunFolder(tmp_path).save_checkpoint(saved, config)
    tensors, info = load_tensors(tmp_path / STATE_FILE, kind=STATE_KIND)
    names = {name.split("/")[0] + "/" for name in tensors}
    assert names == {"model/", "optimiser/", "rng/", "carry/"}
    assert {"optimiser/0/exp_avg", "rng/cpu", "carry/0", "carry/1", "model/head.bias"} <= set(
        tensors
    )
    assert info["pending"] == [15.25, 2]
    assert (info["step"], info["carry"], info["metrics"]) == (7, 2, saved.metrics)
    weights, model_info = load_tensors(tmp_path / MODEL_FILE, kind=MODEL_KIND)
    assert model_info == {"step": 7, "train": config.to_json()}
    assert sorted(weights) == sorted(saved.weights)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 5, "train_bpc": 7.5}\n'
    loaded = RunFolder(tmp_path).load_checkpoint()
    assert loaded is not None
    assert (loaded.step, loaded.metrics, loaded.pending) == (7, saved.metrics, (15.25, 2))
    group = loaded.optimiser["param_groups"][0]  # through JSON: the betas become a list
    assert (group["lr"], group["betas"]) == (0.001, [0.9, 0.999])
    assert group["params"] == saved.optimiser["param_groups"][0]["params"]
    assert torch.equal(
        loaded.optimiser["state"][0]["exp_avg"], saved.optimiser["state"][0]["exp_avg"]
    )
    assert all(torch.equal(a, b) for a, b in zip(loaded.carry, saved.carry, strict=True))
    assert torch.equal(loaded.rng["cpu"], saved.rng["cpu"])
    assert "cuda" not in loaded.rng
    assert RunFolder(tmp_path / "absent").load_checkpoint() is None


def test_a_training_state_without_an_entry_is_refused(tmp_path: Path) -> None:
    tensors, info = {"carry/0": torch.zeros(1, 2, 4)}, {"step": 1, "carry": 1, "metrics": []}
    save_tensors(tmp_path / STATE_FILE, tensors, kind=STATE_KIND, info=info)
    with pytest.raises(CheckpointError, match=r"training-state.safetensors: incomplete or"):
        RunFolder(tmp_path).load_checkpoint()


def test_load_weights_refuses_missing_unexpected_and_misshapen_tensors() -> None:
    model = build_model(TrainConfig(hidden=4))
    weights = dict(model.state_dict())
    with pytest.raises(CheckpointError, match=r"^w: incompatible .*; missing \['head.bias'\]"):
        load_weights(model, {k: v for k, v in weights.items() if k != "head.bias"}, Path("w"))
    with pytest.raises(CheckpointError, match=r"unexpected \['extra'\]"):
        load_weights(model, {**weights, "extra": torch.zeros(1)}, Path("w"))
    with pytest.raises(CheckpointError, match=r"expected head.bias of shape \(256,\), got \(3,\)"):
        load_weights(model, {**weights, "head.bias": torch.zeros(3)}, Path("w"))


def test_check_resumable_names_what_differs(corpus_file: Path, tmp_path: Path) -> None:
    config, corpus = TrainConfig(data=str(corpus_file), hidden=4), load_corpus(str(corpus_file))
    folder = RunFolder(tmp_path / "run")
    assert folder.check_resumable(config, corpus, 1) is None  # killed before writing anything
    folder.prepare(force=False)
    folder.write_config(config, corpus, 1, torch.device("cpu"))
    assert (
        folder.check_resumable(TrainConfig(data=str(corpus_file), hidden=4, steps=9), corpus, 1)
        is None
    )
    with pytest.raises(ValueError, match=r"different configuration: --hidden: 4 -> 5$"):
        folder.check_resumable(TrainConfig(data=str(corpus_file), hidden=5), corpus, 1)
    with pytest.raises(ValueError, match="it ran on 1 process\\(es\\), expected the same, got 2"):
        folder.check_resumable(config, corpus, 2)
    (tmp_path / "other.txt").write_bytes(corpus_file.read_bytes()[::-1])
    other = load_corpus(str(tmp_path / "other.txt"))
    with pytest.raises(ValueError, match="with another SHA-256 than"):
        folder.check_resumable(config, other, 1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["corpus"]["sha256"] == corpus.sha256
    assert (saved["world_size"], saved["device"]) == (1, "cpu")
    assert set(saved["versions"]) == {"lstm", "torch", "python"}


def test_a_run_folder_of_0_1_0_evaluates_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(OLD_RUN, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)  # its data is "corpus.txt", relative
    loaded = load_run("run")
    assert (loaded.config.cell, loaded.config.k, loaded.step) == ("array", 2, 1)
    assert loaded.corpus["sha256"] == load_corpus("corpus.txt").sha256
    assert 7.0 < bits_per_character(loaded.model, load_corpus("corpus.txt").data, 4, 2) < 9.0
    lines: list[str] = []
    resumed = train(loaded.config, "run", resume=True, progress=False, log=lines.append)
    assert "resuming at step 1 of 3" in lines
    fresh = train(loaded.config, "fresh", progress=False, log=lambda line: None)
    assert resumed.step == fresh.step == 3
    ours = load_tensors(Path("run", MODEL_FILE), kind=MODEL_KIND)[0]
    theirs = load_tensors(Path("fresh", MODEL_FILE), kind=MODEL_KIND)[0]
    for name, tensor in theirs.items():  # bit for bit on the machine that wrote it
        torch.testing.assert_close(ours[name], tensor, rtol=1e-4, atol=1e-6)
    records = [json.loads(line) for line in Path("run", "metrics.jsonl").read_text().splitlines()]
    expected = [
        json.loads(line) for line in Path("fresh", "metrics.jsonl").read_text().splitlines()
    ]
    assert [record["step"] for record in records] == [2, 3, 3]
    assert records[0]["train_bpc"] == pytest.approx(expected[0]["train_bpc"], rel=1e-5)


# ------------------------------------------------------------------------------ through the CLI


def test_an_existing_run_is_never_overwritten(
    corpus_file: Path, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained  # trained for 2 steps
    before = snapshot(out)
    code, _, error = run_cli(train_args(corpus_file, out, "--steps", "3"), capsys)
    assert code == 2
    assert error == (
        f"python -m lstm train: error: run folder {out} already exists and is not empty; "
        "pass --resume to continue it or --force to replace it\n"
    )
    assert snapshot(out) == before
    (out / "notes.txt").write_text("mine")
    code, _, _ = run_cli(
        train_args(corpus_file, out, "--steps", "3", "--seed", "5", "--force"), capsys
    )
    assert code == 0
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 5
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces only the run's files


def test_resume_refuses_another_configuration_and_writes_nothing(
    corpus_file: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = trained  # trained for 2 steps
    before = snapshot(out)
    code, _, error = run_cli(
        train_args(corpus_file, out, "--steps", "4", "--lr", "0.1", "--resume"), capsys
    )
    assert code == 2
    assert error == (
        f"python -m lstm train: error: cannot resume {out} with a different configuration: "
        "--lr: 0.003 -> 0.1\n"
    )
    other = tmp_path / "other.txt"
    other.write_bytes(corpus_file.read_bytes()[::-1])
    code, _, error = run_cli(
        ["train", "--data", str(other), "--out", str(out), *TINY, "--steps", "4", "--resume"],
        capsys,
    )
    assert code == 2
    assert "with a different configuration: --data" in error
    assert snapshot(out) == before


def test_resume_of_a_folder_without_checkpoint_starts_at_step_zero(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run killed before its first checkpoint leaves only config.json (or nothing).
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert run_cli(train_args(corpus_file, straight, "--steps", "3"), capsys)[0] == 0
    out.mkdir()
    (out / "config.json").write_bytes((straight / "config.json").read_bytes())
    code, printed, _ = run_cli(train_args(corpus_file, out, "--steps", "3", "--resume"), capsys)
    assert code == 0
    assert printed.splitlines()[0] == f"no checkpoint in {out}: starting at step 0"
    assert_same_weights(straight, out)
    missing = tmp_path / "missing"
    code, printed, _ = run_cli(train_args(corpus_file, missing, "--steps", "3", "--resume"), capsys)
    assert code == 0
    assert printed.splitlines()[0] == f"no checkpoint in {missing}: starting at step 0"
    assert_same_weights(straight, missing)


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _flip_a_bit(folder: Path) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (folder / "model.safetensors").write_bytes(bytes(data))


def _change_the_config(folder: Path) -> None:
    saved = json.loads((folder / "config.json").read_text())
    saved["train"]["hidden"] = 9
    (folder / "config.json").write_text(json.dumps(saved))


def _break_the_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"train": {"hidden": "wide"}}')


def _remove_the_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _plant_a_pickle(folder: Path) -> None:
    from test_lm_files import plant_pickle

    plant_pickle(folder / "model.safetensors", folder / "pickle-ran")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "model.safetensors: damaged or truncated"),
        (_flip_a_bit, "model.safetensors: the tensors fail their SHA-256 check"),
        (_change_the_config, "model.safetensors was not written with .*config.json"),
        (_break_the_config, "config.json: not a valid run configuration"),
        (_remove_the_weights, "model.safetensors does not exist"),
        (_plant_a_pickle, "model.safetensors: not a safetensors file"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "generate"])
def test_damaged_checkpoints_are_refused(
    trained: Path,
    capsys: pytest.CaptureFixture[str],
    damage: object,
    message: str,
    command: str,
) -> None:
    damage(trained)  # type: ignore[operator]
    before = snapshot(trained)
    code, printed, error = run_cli([command, "--checkpoint", str(trained)], capsys)
    assert code == 2
    assert printed == ""
    assert len(error.splitlines()) == 1, error
    assert re.search(f"python -m lstm {command}: error: .*{message}", error), error
    assert not (trained / "pickle-ran").exists()
    assert snapshot(trained) == before


def test_resume_refuses_a_damaged_training_state(
    trained: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = trained / STATE_FILE
    state.write_bytes(state.read_bytes()[:-10])
    before = snapshot(trained)
    code, _, error = run_cli(train_args(corpus_file, trained, "--steps", "4", "--resume"), capsys)
    assert code == 2
    assert "training-state.safetensors: damaged or truncated" in error
    assert snapshot(trained) == before
