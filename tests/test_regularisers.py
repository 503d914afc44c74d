"""Recurrent dropout and zoneout on every registered cell, checked against explicit loops."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from builders import DOUBLE, NAMES, PER_STEP_REGULARISERS_REFUSED, build
from lstm import LSTM
from reference import lstm_step, run_reference, zeros_initial

P = 0.25


class _FixedMasks:
    """Stands in for torch.bernoulli: deterministic masks, and a count of the draws."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, probabilities: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        self.calls += 1
        pattern = torch.arange(probabilities.numel()).reshape(probabilities.shape) % 3 != 0
        return pattern.to(probabilities.dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout"])
def test_training_only_randomness(name: str, option: str) -> None:
    if name in PER_STEP_REGULARISERS_REFUSED:
        with pytest.raises(ValueError, match=f"expected {option}=0.0 .*, got {P}$"):
            build(name, num_layers=2, bidirectional=True, **{option: P})
        return
    torch.manual_seed(0)
    model = build(name, num_layers=2, bidirectional=True, **{option: P})
    plain = build(name, num_layers=2, bidirectional=True).train()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 6, 3, dtype=DOUBLE)
    model.train()
    torch.manual_seed(1)
    first = model(x)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(model(x)[0], first, rtol=0, atol=0)  # same seed, same masks
    assert not torch.allclose(first, plain(x)[0])
    model.eval()
    plain.eval()
    if option == "recurrent_dropout":
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=1e-12)  # off in eval
    else:  # eval uses the expectation: deterministic, and still not the plain cell
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        assert not torch.allclose(model(x)[0], plain(x)[0])


def _reference(
    model: LSTM, x: Tensor, recurrent: Tensor | None, zone: Tensor | None, expectation: bool
) -> Tensor:
    """One-layer LSTM through the reference runner, one sequence at a time, with the
    regulariser written out: sequence b's masks are row b of ``recurrent`` or ``zone``."""
    weights = (model.i2h.weight, model.h2h.weight, model.i2h.bias, model.h2h.bias)
    outputs = []
    for b in range(x.shape[0]):

        def step(
            layer: int, direction: int, x_t: Tensor, h: Tensor, c: Tensor, b: int = b
        ) -> tuple[Tensor, Tensor]:
            h_in = h if recurrent is None else h * recurrent[b] / (1 - P)
            new_h, new_c = lstm_step(x_t, h_in, c, weights)
            if zone is not None:
                new_h = torch.where(zone[b].bool(), h, new_h)
                new_c = torch.where(zone[b].bool(), c, new_c)
            elif expectation:
                new_h, new_c = new_h + P * (h - new_h), new_c + P * (c - new_c)
            return new_h, new_c

        out, _, _ = run_reference(x[b : b + 1], step, zeros_initial(x, 4, (4,)))
        outputs.append(out[0])
    return torch.stack(outputs)


def test_recurrent_dropout_is_one_mask_per_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    masks = _FixedMasks()
    monkeypatch.setattr(torch, "bernoulli", masks)
    model = LSTM(3, 4, recurrent_dropout=P, dtype=DOUBLE).train()
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    out, _ = model(x)
    assert masks.calls == 1  # one draw for the whole sequence, not one per step
    expected_mask = masks(torch.empty(2, 4))
    torch.testing.assert_close(
        out, _reference(model, x, expected_mask, None, False), rtol=0, atol=1e-12
    )


def test_zoneout_keeps_previous_units(monkeypatch: pytest.MonkeyPatch) -> None:
    masks = _FixedMasks()
    monkeypatch.setattr(torch, "bernoulli", masks)
    model = LSTM(3, 4, zoneout=P, dtype=DOUBLE).train()
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    out, _ = model(x)
    assert masks.calls == 2 * 5  # hidden and state, at every step
    expected_mask = masks(torch.empty(2, 4))
    torch.testing.assert_close(
        out, _reference(model, x, None, expected_mask, False), rtol=0, atol=1e-12
    )


def test_zoneout_uses_its_expectation_in_eval() -> None:
    model = LSTM(3, 4, zoneout=P, dtype=DOUBLE).eval()
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    torch.testing.assert_close(
        model(x)[0], _reference(model, x, None, None, True), rtol=0, atol=1e-12
    )


def test_fast_path_steps_aside_for_regularisers(torch_lstm_calls: list[int]) -> None:
    x = torch.randn(2, 5, 3)
    LSTM(3, 4, recurrent_dropout=P).train()(x)
    LSTM(3, 4, zoneout=P).eval()(x)
    assert len(torch_lstm_calls) == 0
    LSTM(3, 4, recurrent_dropout=P).eval()(x)  # recurrent dropout is off in eval
    assert len(torch_lstm_calls) == 1


@pytest.mark.parametrize("option", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (1.0, ValueError, r"in \[0, 1\), got 1.0"),
        (-0.1, ValueError, r"in \[0, 1\), got -0.1"),
        ("0.1", TypeError, r"to be a float, got str '0.1'"),
    ],
)
def test_bad_probabilities(option: str, value: Any, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=f"^LSTM: expected {option} {pattern}$"):
        LSTM(3, 4, **{option: value})


def test_options_show_in_the_repr() -> None:
    text = repr(LSTM(3, 4, recurrent_dropout=0.2, zoneout=0.1))
    assert "recurrent_dropout=0.2" in text
    assert "zoneout=0.1" in text
