"""The LSTM family (``lstm.cells.lstm``): the reference page's API, the f, i, o, g layout,
and the equations against the independent reference, on every engine.

Conversion to and from ``torch.nn.LSTM`` (also in ``lstm.cells.lstm``) is in
``test_convert.py``; the engines' agreement with each other in ``test_engines.py``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import nn

import lstm
from builders import DOUBLE, assert_matches_reference, build, close, lstm_weights
from lstm import LSTM, lstm_cell, lstm_pointwise
from pairwise import case_id, pairwise, product, unmet_pairs
from reference import Step, given_initial, lstm_reference, lstm_step, lstm_steps


def test_documented_attributes_and_state_dict_keys() -> None:
    model = LSTM(7, 5)
    assert model.input_size == 7
    assert model.hidden_size == 5
    assert isinstance(model.i2h, nn.Linear)
    assert isinstance(model.h2h, nn.Linear)
    assert (model.i2h.in_features, model.i2h.out_features) == (7, 20)
    assert (model.h2h.in_features, model.h2h.out_features) == (5, 20)
    assert list(model.state_dict()) == ["i2h.weight", "i2h.bias", "h2h.weight", "h2h.bias"]
    assert model.batch_first is True


def test_stacked_parameter_names_follow_torch_convention() -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=True)
    names = {name for name, _ in model.named_parameters()}
    expected = {
        f"{part}{suffix}.{kind}"
        for part in ("i2h", "h2h")
        for suffix in ("", "_reverse", "_l1", "_l1_reverse")
        for kind in ("weight", "bias")
    }
    assert names == expected
    assert model.i2h_l1.in_features == 8  # layer 1 reads both directions of layer 0


def test_forward_returns_documented_shapes() -> None:
    model = LSTM(3, 4)
    out, (hidden, state) = model(torch.randn(2, 6, 3))
    assert out.shape == (2, 6, 4)
    assert hidden.shape == (1, 2, 4)
    assert state.shape == (1, 2, 4)
    # Client code of the original implementation squeezes the layer dimension away.
    assert hidden.squeeze(0).shape == (2, 4)
    torch.testing.assert_close(out[:, -1], hidden.squeeze(0), rtol=0, atol=0)


def test_forward_cell_matches_documented_equations() -> None:
    model = build("lstm")
    x, hidden, state = (torch.randn(5, n, dtype=DOUBLE) for n in (3, 4, 4))
    new_hidden, new_state = model.forward_cell(x, hidden, state)
    weights = (model.i2h.weight, model.h2h.weight, model.i2h.bias, model.h2h.bias)
    for b in range(5):
        ref_h, ref_c = lstm_step(x[b], hidden[b], state[b], weights)
        torch.testing.assert_close(new_hidden[b], ref_h, rtol=0, atol=1e-12)
        torch.testing.assert_close(new_state[b], ref_c, rtol=0, atol=1e-12)


def test_pure_functions_agree_with_the_module() -> None:
    model = build("lstm")
    x, hidden, state = (torch.randn(5, n, dtype=DOUBLE) for n in (3, 4, 4))
    expected = model.forward_cell(x, hidden, state)
    got = lstm_cell(
        x, hidden, state, model.i2h.weight, model.h2h.weight, model.i2h.bias, model.h2h.bias
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    gates = model.i2h(x) + model.h2h(hidden)
    torch.testing.assert_close(lstm_pointwise(gates, state), expected, rtol=0, atol=1e-14)


def _saturate(
    model: LSTM, forget: float, input_gate: float, output: float, candidate: float
) -> None:
    """Zero the weights; set each gate block's bias so the gate is saturated or fixed."""
    size = model.hidden_size
    with torch.no_grad():
        model.i2h.weight.zero_()
        model.h2h.weight.zero_()
        model.h2h.bias.zero_()
        for block, value in enumerate((forget, input_gate, output, candidate)):
            model.i2h.bias[block * size : (block + 1) * size] = value


def test_gate_layout_is_forget_input_output_candidate() -> None:
    model = build("lstm")
    state = torch.randn(2, 4, dtype=DOUBLE)
    hidden = torch.zeros(2, 4, dtype=DOUBLE)
    x = torch.zeros(2, 3, dtype=DOUBLE)
    # Block 0 open (forget = 1), block 1 shut (input = 0): the state is carried unchanged.
    _saturate(model, forget=60.0, input_gate=-60.0, output=60.0, candidate=0.5)
    new_hidden, new_state = model.forward_cell(x, hidden, state)
    torch.testing.assert_close(new_state, state, rtol=0, atol=1e-12)
    torch.testing.assert_close(new_hidden, torch.tanh(state), rtol=0, atol=1e-12)
    # Block 0 shut, block 1 open: the state becomes tanh(block 3).
    _saturate(model, forget=-60.0, input_gate=60.0, output=60.0, candidate=0.5)
    _, new_state = model.forward_cell(x, hidden, state)
    torch.testing.assert_close(
        new_state, torch.full_like(state, math.tanh(0.5)), rtol=0, atol=1e-12
    )
    # Block 2 shut: the hidden output is zero whatever the state.
    _saturate(model, forget=60.0, input_gate=60.0, output=-60.0, candidate=0.5)
    new_hidden, _ = model.forward_cell(x, hidden, state)
    torch.testing.assert_close(new_hidden, torch.zeros_like(new_hidden), rtol=0, atol=1e-12)


# Every engine runs its own time loop over layers, directions and ragged lengths, so those
# are crossed in full (every case has ragged lengths, a length-1 sequence among them). The
# bias flag only drops the bias terms of each cell's affine maps, which no engine's loop
# depends on: every bias value meets every engine, layer count and direction (pairwise).
FULL_MATRIX = product(
    engine=["auto", "reference"],
    num_layers=[1, 2, 3],
    bidirectional=[False, True],
    bias=[True, False],
)
MATRIX = pairwise(FULL_MATRIX, crossed=["engine", "num_layers", "bidirectional"])


def test_the_reference_matrix_meets_every_pair() -> None:
    assert unmet_pairs(MATRIX, FULL_MATRIX) == set()
    assert len(MATRIX) == 12  # 2 engines x 3 layer counts x 2 directions; bias alternates


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_matches_step_by_step_reference(case: dict[str, Any]) -> None:
    engine, num_layers, bidirectional, bias = case.values()
    model = build("lstm", num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    model.engine = engine
    cells = num_layers * model.num_directions
    h0 = torch.randn(cells, 4, 4, dtype=DOUBLE)
    c0 = torch.randn(cells, 4, 4, dtype=DOUBLE)
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    steps = lstm_steps(lstm_weights(model))
    assert_matches_reference(model, x, steps, given_initial(h0, c0), [6, 2, 5, 1], (h0, c0))


def test_original_checkpoint_loads_unchanged() -> None:
    """A state_dict as the original single-layer implementation saved it loads strictly."""
    checkpoint = {
        "i2h.weight": torch.randn(16, 3, dtype=DOUBLE),
        "i2h.bias": torch.randn(16, dtype=DOUBLE),
        "h2h.weight": torch.randn(16, 4, dtype=DOUBLE),
        "h2h.bias": torch.randn(16, dtype=DOUBLE),
    }
    model = build("lstm")
    model.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    weights = {
        (0, 0): (
            checkpoint["i2h.weight"],
            checkpoint["h2h.weight"],
            checkpoint["i2h.bias"],
            checkpoint["h2h.bias"],
        )
    }
    out, (h_n, c_n) = model(x)
    close((out, h_n, c_n), lstm_reference(x, weights))


def test_default_initialisation_is_linear_default() -> None:
    model = LSTM(9, 25, num_layers=2)
    for layer in range(2):
        parts = model.cell_parts(layer)
        for part in parts.values():
            bound = 1 / math.sqrt(part.in_features)  # type: ignore[union-attr]
            for tensor in (part.weight, part.bias):  # type: ignore[union-attr]
                assert tensor.abs().max() <= bound
                assert tensor.abs().max() > 0.5 * bound  # really drawn from the whole range


@pytest.mark.parametrize("bidirectional", [False, True])
def test_forget_bias_sets_forget_block_and_survives_reset(bidirectional: bool) -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=bidirectional, forget_bias=1.0)
    for _ in range(2):
        for layer in range(2):
            for direction in range(model.num_directions):
                parts = model.cell_parts(layer, direction)
                i2h_bias, h2h_bias = parts["i2h"].bias, parts["h2h"].bias  # type: ignore[union-attr]
                assert torch.equal(i2h_bias[:4], torch.ones(4))
                assert torch.equal(h2h_bias[:4], torch.zeros(4))
                assert not torch.equal(
                    i2h_bias[4:], torch.ones(12)
                )  # the other gates keep defaults
        model.reset_parameters()


def test_forget_bias_none_keeps_default_init() -> None:
    torch.manual_seed(3)
    plain = LSTM(3, 4)
    torch.manual_seed(3)
    explicit = LSTM(3, 4, forget_bias=None)
    for a, b in zip(plain.parameters(), explicit.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("hook", ["init_hidden", "initHidden"])
def test_overriding_either_initial_state_hook_changes_default_state(hook: str) -> None:
    def ones(self: LSTM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filled = x.new_ones(x.shape[0], self.hidden_size)
        return filled, filled.clone()

    custom = type("Custom", (LSTM,), {hook: ones})(3, 4, dtype=DOUBLE)
    custom.load_state_dict(build("lstm").state_dict())
    plain = build("lstm")
    plain.load_state_dict(custom.state_dict())
    x = torch.randn(2, 3, 3, dtype=DOUBLE)
    expected = plain(x, (torch.ones(1, 2, 4, dtype=DOUBLE), torch.ones(1, 2, 4, dtype=DOUBLE)))
    got = custom(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.allclose(plain(x)[0], got[0])
    # The alias answers with the same thing as the canonical name.
    torch.testing.assert_close(
        custom.initHidden(x), custom.init_hidden(x) if hook == "init_hidden" else ones(custom, x)
    )


def test_public_names_are_exported() -> None:
    assert lstm.LSTM is LSTM
    assert lstm.CELLS["lstm"] is LSTM
    assert lstm.get_cell("lstm") is LSTM
    assert isinstance(lstm.__version__, str)


# ------------------------------------------------------------------ projections (proj_size)

PROJ = 2


def projected_steps(model: LSTM) -> Step:
    """The reference's LSTM step followed by h_t = W_hr (o_t * tanh(c_t)), as nn.LSTM documents."""
    weights = lstm_weights(model)
    projections = {
        index: model.cell_parts(*index)["h2p"].weight
        for index in itertools.product(range(model.num_layers), range(model.num_directions))
    }

    def step(
        layer: int, direction: int, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        unprojected, c = lstm_step(x, h, c, weights[(layer, direction)])  # (H,) each
        return projections[(layer, direction)] @ unprojected, c  # (P,), (H,)

    return step


def test_projected_parameters_and_shapes() -> None:
    model = LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=PROJ)
    assert model.proj_size == PROJ
    assert model.output_size == PROJ
    assert "proj_size=2" in repr(model)
    for suffix in ("", "_reverse", "_l1", "_l1_reverse"):
        i2h, h2h, h2p = (getattr(model, name + suffix) for name in ("i2h", "h2h", "h2p"))
        assert (h2h.in_features, h2h.out_features) == (PROJ, 20)  # reads the projected hidden
        assert (h2p.in_features, h2p.out_features, h2p.bias) == (5, PROJ, None)
        assert i2h.in_features == (3 if suffix in ("", "_reverse") else 2 * PROJ)
    x = torch.randn(4, 6, 3)
    out, (hidden, state) = model(x)
    assert out.shape == (4, 6, 2 * PROJ)
    assert hidden.shape == (4, 4, PROJ)
    assert state.shape == (4, 4, 5)
    out, (hidden, state) = model(x[0])  # unbatched
    assert (out.shape, hidden.shape, state.shape) == ((6, 2 * PROJ), (4, PROJ), (4, 5))
    # Without projections nothing changes: no h2p, the same state_dict keys as before.
    assert not any("h2p" in name for name in LSTM(3, 5, proj_size=0).state_dict())


@pytest.mark.parametrize("engine", ["auto", "hoisted", "reference"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True), (3, True)])
def test_projected_lstm_matches_step_by_step_reference(
    engine: str, num_layers: int, bidirectional: bool
) -> None:
    model = build("lstm", num_layers=num_layers, bidirectional=bidirectional, proj_size=PROJ)
    model.engine = engine
    cells = num_layers * model.num_directions
    h0 = torch.randn(cells, 4, PROJ, dtype=DOUBLE)
    c0 = torch.randn(cells, 4, 4, dtype=DOUBLE)
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    initial = given_initial(h0, c0)
    assert_matches_reference(model, x, projected_steps(model), initial, [6, 2, 5, 1], (h0, c0))


def test_pure_function_projects_like_the_module() -> None:
    model = build("lstm", proj_size=PROJ)
    x, hidden, state = (torch.randn(5, n, dtype=DOUBLE) for n in (3, PROJ, 4))
    expected = model.forward_cell(x, hidden, state)
    weights = (model.i2h.weight, model.h2h.weight, model.i2h.bias, model.h2h.bias)
    got = lstm_cell(x, hidden, state, *weights, weight_hr=model.h2p.weight)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)
    assert got[0].shape == (5, PROJ)
    assert got[1].shape == (5, 4)


def test_projected_gradcheck_on_the_reference_path() -> None:
    # Two layers (layer 1 reads both projected directions of layer 0), both directions,
    # unsorted ragged lengths with a single-step sequence; one input feature keeps it quick.
    model = build("lstm", 1, 3, num_layers=2, bidirectional=True, proj_size=PROJ)
    model.engine = "reference"
    x = torch.randn(2, 3, 1, dtype=DOUBLE, requires_grad=True)
    lengths = torch.tensor([1, 3])
    weights = (model.h2p.weight, model.h2h_l1_reverse.weight, model.h2p_l1_reverse.weight)

    def function(x: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (hidden, state) = model(x, lengths=lengths)
        return out, hidden, state

    inputs = (x, *weights)
    assert torch.autograd.gradcheck(function, inputs)
    v = tuple(torch.empty_like(out).uniform_(-1, 1) for out in function(*inputs))
    assert torch.autograd.gradgradcheck(function, inputs, v)


@pytest.mark.parametrize(
    ("proj_size", "error", "message"),
    [
        (-1, ValueError, r"^LSTM: expected proj_size >= 0, got -1$"),
        (5, ValueError, r"^LSTM: expected proj_size < hidden_size=5 .*, got proj_size=5$"),
        (9, ValueError, r"^LSTM: expected proj_size < hidden_size=5 .*, got proj_size=9$"),
        (2.0, TypeError, r"^LSTM: expected proj_size to be an int, got float 2.0$"),
        (True, TypeError, r"^LSTM: expected proj_size to be an int, got bool True$"),
        (None, TypeError, r"^LSTM: expected proj_size to be an int, got NoneType None$"),
    ],
)
def test_proj_size_is_checked_as_nn_lstm_checks_it(
    proj_size: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LSTM(3, 5, proj_size=proj_size)
    if isinstance(proj_size, int) and not isinstance(proj_size, bool):
        with pytest.raises(ValueError, match="proj_size"):  # nn.LSTM refuses the same values
            nn.LSTM(3, 5, proj_size=proj_size)


@pytest.mark.parametrize("name", sorted(set(lstm.CELLS) - {"lstm"}))
def test_other_cells_refuse_projections(name: str) -> None:
    cls = lstm.CELLS[name]
    if issubclass(cls, LSTM):  # inherits LSTM's constructor, builds its own cells
        message = (
            rf"^{cls.__name__}: expected proj_size=0, got proj_size=2: {cls.__name__} does "
            r"not support projections \(\w+ builds its own cells, without LSTM's h2p\)$"
        )
        with pytest.raises(ValueError, match=message):
            lstm.create(name, 3, 5, proj_size=2)
        lstm.create(name, 3, 5, proj_size=0)  # 0 is "off", which every LSTM accepts
    else:
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'proj_size'"):
            lstm.create(name, 3, 5, proj_size=2)


class _HalvedInput(LSTM):
    """Rewrites the step around LSTM's own, which projects: keeps proj_size working."""

    def forward_cell(
        self, x: torch.Tensor, hidden: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward_cell(0.5 * x, hidden, state)


class _OwnStep(LSTM):
    """A step of its own that forgets the projection: hidden has hidden_size features."""

    def forward_cell(
        self, x: torch.Tensor, hidden: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return lstm_pointwise(self.i2h(x) + self.h2h(hidden), state)


class _OwnParts(LSTM):
    """Builds its own cells (like PeepholeLSTM): no h2p to project with."""

    def build_cell(self, input_size, hidden_size, *, device=None, dtype=None):  # type: ignore[no-untyped-def]
        return super().build_cell(input_size, hidden_size, device=device, dtype=dtype)


def test_subclasses_that_rewrite_the_step_own_the_projection() -> None:
    # Decision: the projection is part of LSTM's cell (h2p, applied by LSTM.forward_cell).
    # A subclass that only rewrites forward_cell keeps h2p and gets and returns hidden of
    # proj_size features; one that builds its own cells is refused at construction.
    plain = build("lstm", bidirectional=True, proj_size=PROJ)
    halved = _HalvedInput(3, 4, bidirectional=True, proj_size=PROJ, dtype=DOUBLE)
    halved.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    torch.testing.assert_close(halved(x), plain(0.5 * x), rtol=0, atol=1e-12)
    own_step = _OwnStep(3, 4, proj_size=PROJ, dtype=DOUBLE)
    message = r"^_OwnStep.forward_cell: expected hidden of shape \(2, 2\), got \(2, 4\)$"
    with pytest.raises(ValueError, match=message):
        own_step(x)
    with pytest.raises(ValueError, match=r"_OwnParts does not support projections"):
        _OwnParts(3, 4, proj_size=PROJ)


def test_projected_hidden_shapes_are_checked() -> None:
    model = LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=PROJ)
    x = torch.randn(4, 6, 3)
    unprojected = (torch.zeros(4, 4, 5), torch.zeros(4, 4, 5))
    message = (
        r"^LSTM: expected hidden of shape \(4, 4, 2\) \(num_layers\*num_directions, batch, "
        r"proj_size\), got \(4, 4, 5\)$"
    )
    with pytest.raises(ValueError, match=message):
        model(x, unprojected)
    message = r"^LSTM: expected state of shape \(4, 4, 5\) .*, got \(4, 4, 2\)$"
    with pytest.raises(ValueError, match=message):
        model(x, (torch.zeros(4, 4, 2), torch.zeros(4, 4, 2)))
    message = r"^LSTM.forward_cell: expected hidden of shape \(4, 2\), got \(4, 5\)$"
    with pytest.raises(ValueError, match=message):
        model.forward_cell(torch.randn(4, 3), torch.zeros(4, 5), torch.zeros(4, 5))
    message = r"^LSTM.forward_cell: expected x of shape \(batch, 4\), got \(4, 10\)$"
    with pytest.raises(ValueError, match=message):  # layer 1 reads 2 * proj_size features
        model.layer_cell(1).forward_cell(torch.randn(4, 10), torch.zeros(4, 2), torch.zeros(4, 5))
