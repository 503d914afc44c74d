"""The run configuration, the process layout and device choice of the training command."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lstm.lm.compare import plan
from lstm.lm.config import RESUMABLE, TrainConfig, flag
from lstm.lm.train import Processes, resolve_device


def test_json_round_trip() -> None:
    config = TrainConfig(cell="array", k=2, hidden=12, dropout=0.25, data="file.txt")
    assert TrainConfig.from_json(config.to_json()) == config


def test_from_json_refuses_unknown_and_invalid_fields() -> None:
    fields = TrainConfig().to_json()
    with pytest.raises(ValueError, match=r"unknown configuration fields \['width'\]"):
        TrainConfig.from_json({**fields, "width": 3})
    with pytest.raises(ValueError, match="expected --hidden >= 1, got 0"):
        TrainConfig.from_json({**fields, "hidden": 0})
    with pytest.raises(ValueError, match="invalid configuration: expected --steps to be an int"):
        TrainConfig.from_json({**fields, "steps": "10"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eval_bytes": 1}, "expected --eval-bytes >= 2, got 1"),
        ({"seed": -1}, "expected --seed >= 0, got -1"),
        ({"clip": float("nan")}, "expected --clip to be a finite number > 0, got nan"),
        ({"device": "tpu"}, r"expected --device in \['auto', 'cpu', 'cuda'\], got 'tpu'"),
        ({"layers": True}, "expected --layers to be an integer, got True"),
    ],
)
def test_invalid_values_name_the_flag(changes: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_differences_list_what_shapes_the_weights_only() -> None:
    saved = TrainConfig()
    given = replace(saved, steps=900, device="cpu", eval_every=7, lr=0.1, seq_len=50)
    assert given.differences(saved) == ["--seq-len: 100 -> 50", "--lr: 0.003 -> 0.1"]
    assert {"steps", "device", "eval_every"} <= RESUMABLE
    assert flag("checkpoint_every") == "--checkpoint-every"


def test_processes_read_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Processes.from_environment() == Processes(0, 1, 0)
    assert not Processes().distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    processes = Processes.from_environment()
    assert processes == Processes(3, 4, 1)
    assert processes.distributed
    assert not processes.leader
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="expected integer RANK/WORLD_SIZE/LOCAL_RANK"):
        Processes.from_environment()


def test_resolve_device() -> None:
    assert resolve_device("cpu", Processes()) == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto", Processes(1, 2, 1)) == torch.device("cuda", 1)
    else:
        assert resolve_device("auto", Processes()) == torch.device("cpu")
        with pytest.raises(ValueError, match="expected --device cuda to find a CUDA device"):
            resolve_device("cuda", Processes())


def test_a_budget_a_cell_cannot_meet_is_refused() -> None:
    # At hidden 1 the LSTM model is mostly embedding and head; four lanes cannot come close.
    with pytest.raises(ValueError, match=r"cell 'array': expected a parameter count within 5%"):
        plan(TrainConfig(cell="array", hidden=1, k=64), ["lstm", "array"])
