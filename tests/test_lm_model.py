"""The byte model over every registered cell, its torch.nn.LSTM twin, and budget matching."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from lstm import CELLS
from lstm.lm.compare import TOLERANCE, count_parameters, plan, width_for_budget
from lstm.lm.config import TrainConfig
from lstm.lm.model import ByteModel, parameter_count
from lstm.lm.sample import bits_per_character, generate
from lstm.registry import hidden_multiple


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_windows_with_carried_state_equal_one_long_window(cell: str) -> None:
    # What truncated BPTT relies on: the state handed from window to window loses nothing.
    model = ByteModel(cell, 8, layers=2).double().eval()  # 8: the mLSTM's 4 heads divide it
    tokens = torch.randint(0, 256, (3, 12))
    whole, whole_state = model(tokens)
    first, state = model(tokens[:, :5])
    second, split_state = model(tokens[:, 5:], state)
    assert whole.shape == (3, 12, 256)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=1e-12)
    for carried, direct in zip(split_state, whole_state, strict=True):
        assert carried.shape[-2] == 3  # batch at dim -2
        torch.testing.assert_close(carried, direct, rtol=0, atol=1e-12)


def test_impl_torch_is_the_same_model_on_nn_lstm() -> None:
    torch.manual_seed(3)
    ours = ByteModel("lstm", 10, layers=2).double()
    torch.manual_seed(3)
    theirs = ByteModel("lstm", 10, layers=2, impl="torch").double()
    assert isinstance(theirs.rnn, nn.LSTM)
    tokens = torch.randint(0, 256, (4, 9))
    logits, (hidden, state) = ours(tokens)
    torch_logits, (torch_hidden, torch_state) = theirs(tokens)
    torch.testing.assert_close(torch_logits, logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch_hidden, hidden, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch_state, state, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("cell", "k", "impl", "message"),
    [
        ("gru", None, "lstm", "unknown cell 'gru'"),
        ("lstm", None, "jax", "unknown impl 'jax'"),
        ("array", None, "torch", "expected cell 'lstm', got 'array'"),
        ("lstm", 2, "lstm", "cell 'lstm' has no lanes; expected no k, got k=2"),
        ("array", 0, "lstm", "expected k >= 1, got 0"),
    ],
)
def test_bad_model_options(cell: str, k: int | None, impl: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ByteModel(cell, 4, k=k, impl=impl)


def test_bits_per_character_of_a_uniform_model_is_eight() -> None:
    model = ByteModel("lstm", 4)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)  # every byte equally likely
    data = torch.randint(0, 256, (500,), dtype=torch.uint8)
    assert bits_per_character(model, data, seq_len=7, streams=3) == pytest.approx(8.0, abs=1e-5)


def test_bits_per_character_matches_a_direct_sum() -> None:
    model = ByteModel("lstm", 5).double()
    data = torch.randint(0, 256, (41,), dtype=torch.uint8)
    # 2 streams of 20 predictions, windows of 6: the same as one window per stream
    logits, _ = model(torch.stack([data[:20], data[20:40]]).long())
    targets = torch.stack([data[1:21], data[21:41]]).long()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
    got = bits_per_character(model, data, seq_len=6, streams=2)
    assert got == pytest.approx(float(expected) / math.log(2), rel=1e-12)


def test_generate_is_reproducible_and_follows_the_temperature() -> None:
    model = ByteModel("lstm", 8)
    first = generate(model, b"ab", 40, generator=torch.Generator().manual_seed(1))
    again = generate(model, b"ab", 40, generator=torch.Generator().manual_seed(1))
    other = generate(model, b"ab", 40, generator=torch.Generator().manual_seed(2))
    assert len(first) == 40
    assert first == again
    assert first != other
    cold = generate(model, b"ab", 20, temperature=1e-4, generator=torch.Generator())
    logits, _ = model(torch.tensor([list(b"ab")]))
    assert cold[0] == int(logits[0, -1].argmax())  # near zero temperature: the likeliest byte
    with pytest.raises(ValueError, match="expected temperature > 0, got 0"):
        generate(model, b"", 3, temperature=0)
    with pytest.raises(ValueError, match="expected length >= 0, got -1"):
        generate(model, b"", -1)


def test_parameter_budget_is_met_within_five_percent() -> None:
    base = TrainConfig(hidden=64)
    budget = count_parameters(base)
    assert budget == parameter_count(ByteModel("lstm", 64))
    configs = plan(base, ["lstm", "array", "stochastic-array", "peephole", "slstm"])
    assert [config.k for config in configs] == [None, 4, 4, None, None]  # lanes stated
    for config in configs:
        assert abs(count_parameters(config) - budget) <= TOLERANCE * budget, config.cell
    array = replace(base, cell="array", k=4)
    width = width_for_budget(array, budget)
    gaps = [
        abs(count_parameters(replace(array, hidden=h)) - budget) for h in (width - 1, width + 1)
    ]
    assert abs(count_parameters(replace(array, hidden=width)) - budget) <= min(gaps)


def test_compare_sizes_an_mlstm_in_steps_of_its_heads() -> None:
    # The mLSTM splits its width among 4 heads: the budget search only tries multiples of 4.
    assert hidden_multiple(CELLS["mlstm"]) == 4
    assert hidden_multiple(CELLS["lstm"]) == 1
    base = TrainConfig(hidden=64, layers=1)
    (mlstm,) = plan(base, ["mlstm"])
    assert mlstm.hidden % 4 == 0
    budget = count_parameters(TrainConfig(hidden=64, layers=1, cell="lstm"))
    assert abs(count_parameters(mlstm) - budget) <= TOLERANCE * budget
