"""The run configuration: its checks, its JSON, and the command-line flags made from it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lstm import CELLS
from lstm.lm.compare import plan
from lstm.lm.config import RESUMABLE, TrainConfig, flag, flags


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


def test_a_budget_a_cell_cannot_meet_is_refused() -> None:
    # At hidden 1 the LSTM model is mostly embedding and head; four lanes cannot come close.
    with pytest.raises(ValueError, match=r"cell 'array': expected a parameter count within 5%"):
        plan(TrainConfig(cell="array", hidden=1, k=64), ["lstm", "array"])


def test_k_is_checked_once_and_named_as_the_flag() -> None:
    for cell in ("array", "lstm"):  # below 1 comes first, before whether the cell has lanes
        with pytest.raises(ValueError, match=r"^expected --k >= 1, got 0$"):
            TrainConfig(cell=cell, k=0)
    with pytest.raises(ValueError, match=r"^cell 'lstm' has no lanes; expected no k, got k=2$"):
        TrainConfig(k=2)


def test_flags_come_from_the_fields() -> None:
    train = {option.name: option for option in flags("train")}
    compare = {option.name: option for option in flags("compare")}
    assert list(train) == [name for name in TrainConfig().to_json() if name != "clip"]
    # compare takes its cells from its own --cells
    assert set(train) - set(compare) == {"cell", "checkpoint_every", "eval_every", "impl"}
    assert [option.name for option in flags("evaluate")] == ["device", "threads"]
    assert (train["steps"].default, compare["steps"].default) == (400, 300)
    assert (train["k"].value_type, train["k"].default, train["lr"].value_type) == (int, None, float)
    assert train["device"].choices == ("auto", "cpu", "cuda")
    assert train["seq_len"].option_string == "--seq-len"
    assert all(cell in train["cell"].help for cell in CELLS)  # the registry when asked
    no_default = {"k", "threads"}  # None: the registry's lanes, torch's own thread count
    assert all(
        "%(default)s" in option.help for name, option in train.items() if name not in no_default
    )


def test_threads_may_be_left_to_torch_and_change_on_resume() -> None:
    assert TrainConfig().threads is None
    with pytest.raises(ValueError, match=r"^expected --threads >= 1, got 0$"):
        TrainConfig(threads=0)
    assert TrainConfig(threads=1).differences(TrainConfig(threads=2)) == []
    assert TrainConfig(threads=1).differences(TrainConfig(hidden=8)) == ["--hidden: 8 -> 256"]


def test_from_flags_takes_the_command_flags_and_the_command_fields() -> None:
    values = {**TrainConfig(hidden=12).to_json(), "out": "elsewhere", "clip": 5.0}
    config = TrainConfig.from_flags(values, "compare", eval_every=3)
    assert (config.hidden, config.eval_every) == (12, 3)
    assert config.clip == 1.0  # not a flag of compare: the default
    with pytest.raises(KeyError, match="data"):  # every flag of the command is needed
        TrainConfig.from_flags({"hidden": 12}, "train")
