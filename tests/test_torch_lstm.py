"""``lstm.nn.LSTM`` and ``lstm.nn.LSTMCell`` (``lstm.cells.torch_lstm``): torch.nn's faces.

Everything is compared with torch's own modules, built and seeded the same way: signatures,
names, shapes, initial draws, state dicts both ways, writes through every name, results and
gradients (bitwise where both run torch's kernel; 1e-10 in float64 on the reference path).
"""

from __future__ import annotations

import copy
import inspect
import io
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm
from builders import close, gradients

DOUBLE = torch.float64

CONFIGS = [
    pytest.param(
        layers, bidirectional, bias, proj, id=f"L{layers}-bi{bidirectional:d}-b{bias:d}-p{proj}"
    )
    for layers, bidirectional, bias, proj in itertools.product(
        [1, 2], [False, True], [True, False], [0, 2]
    )
]


def seeded_pair(*args: Any, seed: int = 0, **kwargs: Any) -> tuple[lstm.nn.LSTM, nn.LSTM]:
    """``lstm.nn.LSTM(*args, **kwargs)`` and ``nn.LSTM(*args, **kwargs)``, each built after
    ``torch.manual_seed(seed)``: nothing copied from one to the other."""
    torch.manual_seed(seed)
    ours = lstm.nn.LSTM(*args, **kwargs)
    torch.manual_seed(seed)
    theirs = nn.LSTM(*args, **kwargs)
    return ours, theirs


# ------------------------------------------------------------------ construction


def test_signature_is_nn_lstm_s_then_keyword_only_extras() -> None:
    theirs = list(inspect.signature(nn.modules.rnn.RNNBase.__init__).parameters.values())[2:]
    ours = list(inspect.signature(lstm.nn.LSTM.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [
        (p.name, p.default) for p in theirs
    ]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in ours[: len(theirs)])
    assert [(p.name, p.kind) for p in ours[len(theirs) :]] == [
        ("recurrent_dropout", inspect.Parameter.KEYWORD_ONLY),
        ("zoneout", inspect.Parameter.KEYWORD_ONLY),
    ]


def test_cell_signature_is_nn_lstm_cell_s() -> None:
    theirs = inspect.signature(nn.LSTMCell.__init__).parameters.values()
    ours = inspect.signature(lstm.nn.LSTMCell.__init__).parameters.values()
    assert [(p.name, p.default, p.kind) for p in ours] == [
        (p.name, p.default, p.kind) for p in theirs
    ]


def test_all_ten_arguments_positionally_as_nn_lstm_takes_them() -> None:
    arguments = (3, 4, 2, False, True, 0.25, True, 2, "cpu", DOUBLE)
    ours, theirs = seeded_pair(*arguments)
    assert repr(ours) == repr(theirs)
    assert ours.weight_ih_l0.dtype == DOUBLE
    assert (ours.batch_first, ours.bias, ours.proj_size) == (True, False, 2)


@pytest.mark.parametrize(("layers", "bidirectional", "bias", "proj"), CONFIGS)
def test_names_shapes_order_and_draws_are_nn_lstm_s(
    layers: int, bidirectional: bool, bias: bool, proj: int
) -> None:
    ours, theirs = seeded_pair(5, 4, layers, bias, bidirectional=bidirectional, proj_size=proj)
    assert repr(ours) == repr(theirs)
    assert [name for name, _ in ours.named_parameters()] == [
        name for name, _ in theirs.named_parameters()
    ]
    for mine, its in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert type(mine) is nn.Parameter
        assert torch.equal(mine, its)  # the same seed gives the same weights, bit for bit
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert ours._all_weights == theirs._all_weights
    assert ours.mode == theirs.mode == "LSTM"
    assert not hasattr(ours, "bias_ih_l0") if not bias else hasattr(ours, "bias_ih_l0")


def test_flat_weights_and_all_weights_are_the_parameters_themselves() -> None:
    model = lstm.nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2)
    parameters = dict(model.named_parameters())
    for name, weight in zip(model._flat_weights_names, model._flat_weights, strict=True):
        assert weight is parameters[name]
    for names, weights in zip(model._all_weights, model.all_weights, strict=True):
        assert all(w is parameters[n] for n, w in zip(names, weights, strict=True))


def test_reset_parameters_draws_as_nn_lstm() -> None:
    ours, theirs = seeded_pair(3, 4, 2)
    torch.manual_seed(7)
    ours.reset_parameters()
    torch.manual_seed(7)
    theirs.reset_parameters()
    assert all(
        torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
    )


def test_bad_construction_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^LSTM: expected proj_size < hidden_size=4"):
        lstm.nn.LSTM(3, 4, proj_size=4)
    with pytest.raises(TypeError, match=r"^LSTM: expected batch_first to be a bool"):
        lstm.nn.LSTM(3, 4, batch_first=1)
    with pytest.raises(ValueError, match=r"^LSTM: expected dropout in \[0, 1\]"):
        lstm.nn.LSTM(3, 4, 2, dropout=1.5)

    class OwnCells(lstm.nn.LSTM):
        def build_cell(self, input_size: int, hidden_size: int, **factory: Any) -> Any:
            return {"weight_ih": nn.Parameter(torch.zeros(4 * hidden_size, input_size))}

    with pytest.raises(ValueError, match=r"without LSTM's weight_hr\)$"):
        OwnCells(3, 4, proj_size=2)


# ------------------------------------------------------------------ state dicts


@pytest.mark.parametrize(("layers", "bidirectional", "bias", "proj"), CONFIGS)
def test_state_dicts_cross_both_ways_strictly(
    layers: int, bidirectional: bool, bias: bool, proj: int
) -> None:
    options = {"bidirectional": bidirectional, "proj_size": proj, "bias": bias}
    ours, theirs = lstm.nn.LSTM(5, 4, layers, **options), nn.LSTM(5, 4, layers, **options)
    ours.load_state_dict(theirs.state_dict())  # strict=True
    x = torch.randn(6, 3, 5)
    close(ours(x), theirs(x), atol=0)
    torch.manual_seed(1)
    fresh = nn.LSTM(5, 4, layers, **options)
    fresh.load_state_dict(ours.state_dict())
    close(fresh(x), ours(x), atol=0)


def test_a_saved_state_dict_is_plain_tensors() -> None:
    model = lstm.nn.LSTM(3, 4, 2, bidirectional=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only=True: no class of this package is needed
    assert all(type(value) is Tensor for value in loaded.values())
    theirs = nn.LSTM(3, 4, 2, bidirectional=True)
    theirs.load_state_dict(loaded)
    x = torch.randn(5, 2, 3)
    close(theirs(x), model(x), atol=0)


def test_from_torch_and_to_torch() -> None:
    theirs = nn.LSTM(3, 4, 2, batch_first=True, dropout=0.5, proj_size=2).double().eval()
    ours = lstm.nn.LSTM.from_torch(theirs)
    assert repr(ours) == repr(theirs)
    assert not ours.training
    assert ours.weight_ih_l0.dtype == DOUBLE
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    close(ours(x), theirs(x), atol=0)
    back = ours.to_torch()
    assert type(back) is nn.LSTM
    close(back(x), theirs(x), atol=0)
    with pytest.raises(TypeError, match=r"^LSTM\.from_torch: expected a torch\.nn\.LSTM, got GRU"):
        lstm.nn.LSTM.from_torch(nn.GRU(3, 4))  # type: ignore[arg-type]


def test_a_whole_module_saves_and_loads_with_safe_globals() -> None:
    model = nn.ModuleDict({"rnn": lstm.nn.LSTM(3, 4), "cell": lstm.nn.LSTMCell(3, 4)})
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([*lstm.safe_globals(), nn.ModuleDict]):
        loaded = torch.load(buffer)
    x = torch.randn(5, 2, 3)
    close(loaded["rnn"](x), model["rnn"](x), atol=0)
    close(loaded["cell"](x[0]), model["cell"](x[0]), atol=0)


# ------------------------------------------------------------------ writes through names

H = 4
WRITES: dict[str, Callable[[nn.Module], object]] = {
    "nn.init.zeros_": lambda m: nn.init.zeros_(m.weight_ih_l0),
    "forget bias via .data slice": lambda m: m.bias_ih_l0.data[H : 2 * H].fill_(1.0),
    ".data.copy_": lambda m: m.weight_hh_l0.data.copy_(torch.eye(4 * H, H)),
    "orthogonal_ by named_parameters": lambda m: [
        nn.init.orthogonal_(p) for n, p in m.named_parameters() if "weight_hh" in n
    ],
    "copy through all_weights": lambda m: [
        w.data.copy_(torch.full_like(w, 0.01 * i)) for i, w in enumerate(m.all_weights[1])
    ],
    "uniform_ on _flat_weights": lambda m: m._flat_weights[2].data.uniform_(-2, 2),
    "augmented assignment under no_grad": lambda m: m.bias_hh_l1_reverse.data.__iadd__(0.5),
    "a new parameter assigned": lambda m: setattr(
        m, "weight_ih_l1", nn.Parameter(torch.full((4 * H, 2 * H), 0.05))
    ),
    "a parameter tied to another": lambda m: setattr(m, "bias_ih_l0_reverse", m.bias_ih_l0),
}
"""Writes that code written for nn.LSTM makes through its names; each must act on both."""


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("engine", ["auto", "reference", "hoisted"])
def test_every_write_through_a_name_acts_as_on_nn_lstm(write: str, engine: str) -> None:
    ours, theirs = seeded_pair(3, H, 2, bidirectional=True)
    ours.engine = engine
    x = torch.randn(5, 2, 3)
    before = ours(x)[0].detach()
    torch.manual_seed(3)
    with torch.no_grad():
        WRITES[write](ours)
    torch.manual_seed(3)
    with torch.no_grad():
        WRITES[write](theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for mine, its in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, its)
    after, final = ours(x)
    assert not torch.equal(after, before)  # the write took effect
    expected, expected_final = theirs(x)
    close((after, final), (expected, expected_final), atol=0 if engine == "auto" else 1e-6)


def test_a_tied_parameter_trains_as_one_as_on_nn_lstm() -> None:
    """Ports the CPU part of ``TestNN.test_cudnn_weight_tying``: a parameter assigned to
    another name is one parameter, trained once by SGD, seen by both cells."""
    ours, theirs = seeded_pair(10, 20, batch_first=True, bidirectional=True)
    results = []
    for model in (ours, theirs):
        model.bias_ih_l0_reverse = model.bias_ih_l0
        assert len(list(model.parameters())) == 7
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(5, 4, 10, generator=torch.Generator().manual_seed(0))
        model(x)[0].sum().backward()
        optimiser.step()
        results.append(model(x))
        assert model._flat_weights[model._flat_weights_names.index("bias_ih_l0_reverse")] is (
            model.bias_ih_l0
        )
    close(results[0], results[1], atol=0)


def test_a_parametrized_weight_is_read_as_computed_on_every_engine() -> None:
    ours, theirs = seeded_pair(3, 4, 2)
    for model in (ours, theirs):
        nn.utils.parametrizations.weight_norm(model, "weight_hh_l0")
        with torch.no_grad():
            model.parametrizations.weight_hh_l0.original0.mul_(0.5)  # the norm changes
    x = torch.randn(5, 2, 3)
    expected = theirs(x)
    for engine in ("auto", "reference"):
        ours.engine = engine
        close(ours(x), expected, atol=1e-6)
    assert ours.engine_for(x).name == "reference"
    ours.engine = "auto"
    assert ours.engine_for(x).name == "kernel"
    grads = gradients(ours(x)[0:1], list(ours.parameters()))
    grads_theirs = gradients(theirs(x)[0:1], list(theirs.parameters()))
    close(grads, grads_theirs, atol=1e-6)


def test_a_deleted_weight_is_named_and_can_be_assigned_again() -> None:
    """As ``TestNN.test_partial_flat_weights`` (on the CPU): delete a weight, move the module,
    assign a plain tensor in its place, and the module computes what it did."""
    model = lstm.nn.LSTM(10, 6, 2)
    x = torch.randn(3, 2, 10)
    expected = model(x)[0]
    weight = model.weight_hh_l0
    del model.weight_hh_l0
    assert not hasattr(model, "weight_hh_l0")
    assert model._flat_weights[1] is None
    model.float()  # moving a module with a weight missing must not raise
    with pytest.raises(AttributeError, match=r"^LSTM: expected a tensor as weight_hh_l0, got none"):
        model(x)
    model.weight_hh_l0 = weight.detach().clone()  # a plain tensor, as upstream assigns one
    assert "weight_hh_l0" not in model._parameters
    close(model(x)[0], expected, atol=0)


# ------------------------------------------------------------------ forward


def test_batch_first_false_is_the_default_and_states_are_nn_lstm_s() -> None:
    ours, theirs = seeded_pair(16, 32)
    x = torch.randn(10, 4, 16)  # (seq_len, batch, features)
    output, (hidden, state) = ours(x)
    assert output.shape == (10, 4, 32)
    assert hidden.shape == (1, 4, 32)
    close((output, (hidden, state)), theirs(x), atol=0)


@pytest.mark.parametrize(("layers", "bidirectional", "bias", "proj"), CONFIGS)
def test_packed_input_and_given_states_equal_nn_lstm_with_gradients(
    layers: int, bidirectional: bool, bias: bool, proj: int
) -> None:
    options = {"bidirectional": bidirectional, "proj_size": proj, "bias": bias, "dtype": DOUBLE}
    ours, theirs = seeded_pair(3, 4, layers, **options)
    cells = layers * (2 if bidirectional else 1)
    x = torch.randn(6, 4, 3, dtype=DOUBLE, requires_grad=True)
    h0 = torch.randn(cells, 4, proj or 4, dtype=DOUBLE, requires_grad=True)
    c0 = torch.randn(cells, 4, 4, dtype=DOUBLE, requires_grad=True)
    results = []
    for model in (ours, theirs):
        packed = pack_padded_sequence(x, [6, 2, 5, 1], enforce_sorted=False)
        output, (hidden, state) = model(packed, (h0, c0))
        flat = (pad_packed_sequence(output)[0], hidden, state)
        results.append((flat, gradients(flat, [x, h0, c0, *model.parameters()])))
    close(results[0][0], results[1][0], atol=0)  # both run torch.lstm on the same tensors
    close(results[0][1], results[1][1], atol=0)


def test_unbatched_input_takes_unbatched_states() -> None:
    ours, theirs = seeded_pair(3, 4, 2)
    x, h0, c0 = torch.randn(5, 3), torch.randn(2, 4), torch.randn(2, 4)
    close(ours(x, (h0, c0)), theirs(x, (h0, c0)), atol=0)


def test_one_cell_s_two_dimensional_states_are_refused_for_batched_input() -> None:
    """nn.LSTM refuses (batch, hidden) states for batched input; so does its face (the
    reference page's lstm.LSTM takes them for one layer and direction)."""
    x, h0 = torch.randn(5, 2, 3), torch.zeros(2, 4)
    with pytest.raises(RuntimeError):
        nn.LSTM(3, 4)(x, (h0, h0))
    with pytest.raises(lstm.ShapeError, match=r"^LSTM: expected hidden of shape \(1, 2, 4\) "):
        lstm.nn.LSTM(3, 4)(x, (h0, h0))
    assert lstm.LSTM(3, 4, batch_first=False)(x, (h0, h0))[0].shape == (5, 2, 4)


def test_the_stock_module_passes_its_own_parameters_to_torch_lstm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No per-call gate permutation: the kernel receives the parameters themselves."""
    model = lstm.nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2)
    seen: list[list[Tensor]] = []
    kernel = torch.lstm

    def spy(*args: Any) -> Any:
        seen.append(list(args[2] if isinstance(args[1], tuple) else args[3]))
        return kernel(*args)

    monkeypatch.setattr(torch, "lstm", spy)
    x = torch.randn(5, 2, 3)
    model(x)
    model(x, lengths=[5, 3])
    assert len(seen) == 2
    for weights in seen:
        assert len(weights) == len(model._flat_weights_names)
        assert all(w is p for w, p in zip(weights, model.parameters(), strict=True))


def test_the_autograd_graph_is_nn_lstm_s_node_for_node() -> None:
    """Training adds nothing around the kernel: the same nodes as nn.LSTM's graph."""
    ours, theirs = seeded_pair(1, 8, 2, batch_first=True, proj_size=4)
    x = torch.randn(3, 5, 1, requires_grad=True)

    def nodes(output: Tensor) -> list[str]:
        seen, stack = set(), [output.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
        return sorted(type(node).__name__ for node in seen)

    for part in range(3):  # output, h_n, c_n
        flat = [ours(x)[0], *ours(x)[1]], [theirs(x)[0], *theirs(x)[1]]
        assert nodes(flat[0][part]) == nodes(flat[1][part])


def test_engine_for_names_the_engine_and_why() -> None:
    x = torch.randn(5, 2, 3)
    engine = lstm.nn.LSTM(3, 4).engine_for(x)
    assert engine.name == "kernel"
    assert "torch.lstm" in engine.reason
    assert "no gate permutation" in engine.reason
    model = lstm.nn.LSTM(3, 4, zoneout=0.1)
    assert model.engine_for(x) == (
        "reference",
        "the kernel does not apply: zoneout=0.1 acts at every step (the compiled engine's too)",
    )
    model = lstm.nn.LSTM(3, 4)
    model.engine = "hoisted"
    assert model.engine_for(x) == (
        "reference",
        "engine='hoisted' is set, but LSTM has no i2h to hoist",
    )


def test_a_long_ragged_training_batch_runs_compiled_else_the_reference_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = lstm.nn.LSTM(2, 3, dtype=DOUBLE)
    x = torch.randn(300, 2, 2, dtype=DOUBLE)
    engine = model.engine_for(x, lengths=[300, 10])
    assert engine.name == "compiled"
    assert "packed backward" in engine.reason
    with monkeypatch.context() as patched:
        patched.setenv("LSTM_COMPILED", "0")
        engine = model.engine_for(x, lengths=[300, 10])
    assert engine.name == "reference"
    assert "packed backward" in engine.reason
    with torch.no_grad():
        assert model.engine_for(x, lengths=[300, 10]).name == "kernel"


def test_forward_cell_on_the_module_steps_layer_zero_forward() -> None:
    model = lstm.nn.LSTM(3, 4, 2, bidirectional=True, dtype=DOUBLE)
    assert model.weight_ih is model.weight_ih_l0
    assert model.bias_hh is model.bias_hh_l0
    x = torch.randn(1, 2, 3, dtype=DOUBLE)
    zeros = torch.zeros(2, 4, dtype=DOUBLE)
    hidden, state = model.forward_cell(x[0], zeros, zeros)
    reference = nn.LSTMCell(3, 4, dtype=DOUBLE)
    reference.load_state_dict(
        {
            name: getattr(model, name + "_l0")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
    )
    close((hidden, state), reference(x[0]), atol=1e-12)
    view = model.layer_cell(1, 1)
    assert view.weight_ih is model.weight_ih_l1_reverse
    assert view.weight_hr is None


# ------------------------------------------------------------------ a changed cell


class CoupledGate(lstm.nn.LSTM):
    """The tutorial's coupled input-forget gate in torch's order: c' = f c + (1 - f) g."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = nn.functional.linear(x, self.weight_ih, self.bias_ih)
        gates = gates + nn.functional.linear(hidden, self.weight_hh, self.bias_hh)
        _, forget, candidate, output = gates.chunk(4, dim=-1)  # i, f, g, o
        forget = torch.sigmoid(forget)
        state = forget * state + (1 - forget) * torch.tanh(candidate)
        return torch.sigmoid(output) * torch.tanh(state), state


def coupled_reference(model: CoupledGate, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The same equations step by step in plain tensor code, one layer, one direction."""
    w_ih, w_hh, b_ih, b_hh = (
        getattr(model, n + "_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    hidden = x.new_zeros(x.shape[1], model.hidden_size)
    state = hidden.clone()
    outputs = []
    for step in x:
        a = step @ w_ih.T + b_ih + hidden @ w_hh.T + b_hh
        size = model.hidden_size
        forget = torch.sigmoid(a[:, size : 2 * size])
        state = forget * state + (1 - forget) * torch.tanh(a[:, 2 * size : 3 * size])
        hidden = torch.sigmoid(a[:, 3 * size :]) * torch.tanh(state)
        outputs.append(hidden)
    return torch.stack(outputs), hidden, state


def test_a_subclass_step_runs_on_the_driver_with_gates_in_torch_order() -> None:
    model = CoupledGate(3, 4, dtype=DOUBLE)
    x = torch.randn(6, 2, 3, dtype=DOUBLE, requires_grad=True)
    engine = model.engine_for(x)
    assert engine == ("compiled", "CoupledGate's forward_cell, traced and compiled")
    output, (hidden, state) = model(x)
    expected = coupled_reference(model, x)
    close((output, hidden[0], state[0]), expected, atol=1e-12)
    inputs = [x, *model.parameters()]
    close(gradients((output,), inputs), gradients(expected[:1], inputs), atol=1e-10)
    assert torch.autograd.gradcheck(lambda t: model(t)[0], (x[:3],))


def test_a_subclass_keeps_layers_directions_and_lengths() -> None:
    model = CoupledGate(3, 4, 2, bidirectional=True, dtype=DOUBLE)
    x = torch.randn(6, 3, 3, dtype=DOUBLE)
    output, (hidden, _) = model(x, lengths=[6, 2, 4])
    alone, (alone_hidden, _) = model(x[:2, 1:2])
    close(output[:2, 1:2], alone, atol=1e-12)
    close(hidden[:, 1:2], alone_hidden, atol=1e-12)


# ------------------------------------------------------------------ LSTMCell


def seeded_cells(*args: Any, **kwargs: Any) -> tuple[lstm.nn.LSTMCell, nn.LSTMCell]:
    torch.manual_seed(0)
    ours = lstm.nn.LSTMCell(*args, **kwargs)
    torch.manual_seed(0)
    return ours, nn.LSTMCell(*args, **kwargs)


@pytest.mark.parametrize("bias", [True, False])
def test_cell_names_draws_and_repr_are_nn_lstm_cell_s(bias: bool) -> None:
    ours, theirs = seeded_cells(3, 5, bias)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
    )
    assert (ours.bias_ih is None) == (not bias)
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_cell_equals_nn_lstm_cell(bias: bool, engine: str) -> None:
    ours, theirs = seeded_cells(3, 5, bias, dtype=DOUBLE)
    ours.engine = engine
    x = torch.randn(4, 3, dtype=DOUBLE, requires_grad=True)
    hx = (torch.randn(4, 5, dtype=DOUBLE, requires_grad=True), torch.randn(4, 5, dtype=DOUBLE))
    got, want = ours(x, hx), theirs(x, hx)
    atol = 0 if engine == "auto" else 1e-12
    close(got, want, atol=atol)
    inputs = [x, hx[0]]
    close(
        gradients(got, [*inputs, *ours.parameters()]),
        gradients(want, [*inputs, *theirs.parameters()]),
        atol=0 if engine == "auto" else 1e-10,
    )
    close(ours(x[0], (hx[0][0], hx[1][0])), theirs(x[0], (hx[0][0], hx[1][0])), atol=atol)
    close(ours(x), theirs(x), atol=atol)


def test_cell_engine_and_a_changed_cell() -> None:
    x = torch.randn(2, 3)
    assert lstm.nn.LSTMCell(3, 5).engine_for(x) == (
        "kernel",
        "LSTMCell's own step: torch.lstm_cell, the kernel of nn.LSTMCell",
    )

    class Leaky(lstm.nn.LSTMCell):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            new_hidden, state = super().forward_cell(x, hidden, state)
            return 0.5 * (new_hidden + hidden), state

    cell = Leaky(3, 5)
    assert cell.engine_for(x) == (
        "reference",
        "Leaky overrides forward_cell of LSTMCell: it runs its own step",
    )
    plain = lstm.nn.LSTMCell(3, 5)
    plain.load_state_dict(cell.state_dict())
    hx = (torch.randn(2, 5), torch.randn(2, 5))
    expected_hidden, expected_state = plain(x, hx)
    hidden, state = cell(x, hx)
    close((hidden, state), (0.5 * (expected_hidden + hx[0]), expected_state), atol=1e-6)
    assert cell(x[0], (hx[0][0], hx[1][0]))[0].shape == (5,)
    cell.engine = "hoisted"
    with pytest.raises(ValueError, match=r"^Leaky: expected engine in \('auto', 'reference'\)"):
        cell(x)


def test_cell_runs_a_decoder_loop_as_nn_lstm_cell_does() -> None:
    """Ports ``TestNN.test_LSTM_cell``: six steps of a loop, then backward through them."""
    for bias in (True, False):
        ours, theirs = seeded_cells(10, 20, bias=bias)
        x = torch.randn(3, 10)
        results = []
        for cell in (ours, theirs):
            hx, cx = (
                torch.randn(3, 20, generator=torch.Generator().manual_seed(1)),
                torch.zeros(3, 20),
            )
            for _ in range(6):
                hx, cx = cell(x, (hx, cx))
            (hx + cx).sum().backward()
            results.append((hx, cx, *(p.grad for p in cell.parameters())))
        close(results[0], results[1], atol=0)


def test_cell_gradcheck_and_gradgradcheck_on_both_engines() -> None:
    cell = lstm.nn.LSTMCell(3, 2, dtype=DOUBLE)
    x = torch.randn(2, 3, dtype=DOUBLE, requires_grad=True)
    for engine in ("auto", "reference"):
        cell.engine = engine
        assert torch.autograd.gradcheck(lambda t: cell(t), (x,))
        assert torch.autograd.gradgradcheck(lambda t: cell(t), (x,))


@pytest.mark.parametrize(
    ("input_shape", "hx_shapes", "message"),
    [
        ((3, 11), [(3, 20), (3, 20)], r"expected input of shape \(batch, 10\), got \(3, 11\)"),
        ((3, 10), [(3, 21), (3, 20)], r"expected hx\[0\] of shape \(3, 20\) for batched input"),
        ((3, 10), [(3, 20), (3, 21)], r"expected hx\[1\] of shape \(3, 20\) for batched input"),
        ((3, 10), [(5, 20), (5, 20)], r"expected hx\[0\] of shape \(3, 20\) .*got \(5, 20\)"),
        ((3, 10), [(1, 20), (3, 20)], r"expected hx\[0\] of shape \(3, 20\) .*got \(1, 20\)"),
        ((10,), [(1, 20), (1, 20)], r"expected hx\[0\] of shape \(20,\) for unbatched input"),
        ((3, 10), [(20,), (20,)], r"expected hx\[0\] of shape \(3, 20\) for batched input"),
        ((2, 3, 10), [(3, 20), (3, 20)], r"expected input of rank 1 \(10,\) or rank 2"),
    ],
)
def test_cell_bad_shapes_name_what_was_expected(
    input_shape: tuple[int, ...], hx_shapes: list[tuple[int, ...]], message: str
) -> None:
    cell = lstm.nn.LSTMCell(10, 20)
    hx = tuple(torch.randn(shape) for shape in hx_shapes)
    with pytest.raises(lstm.ShapeError, match="^LSTMCell: " + message):
        cell(torch.randn(input_shape), hx)  # type: ignore[arg-type]
    with pytest.raises((RuntimeError, ValueError)):
        nn.LSTMCell(10, 20)(torch.randn(input_shape), hx)  # torch refuses them too


def test_cell_dtype_and_type_errors() -> None:
    cell = lstm.nn.LSTMCell(3, 4)
    with pytest.raises(lstm.DTypeError, match=r"^LSTMCell: expected input of dtype torch\.float32"):
        cell(torch.randn(2, 3, dtype=DOUBLE))
    with pytest.raises(
        TypeError, match=r"^LSTMCell: expected hx to be a \(h, c\) tuple, got Tensor"
    ):
        cell(torch.randn(2, 3), torch.randn(2, 4))  # type: ignore[arg-type]


def test_cell_from_torch_and_to_torch() -> None:
    theirs = nn.LSTMCell(3, 4, bias=False, dtype=DOUBLE)
    ours = lstm.nn.LSTMCell.from_torch(theirs)
    x = torch.randn(2, 3, dtype=DOUBLE)
    close(ours(x), theirs(x), atol=0)
    close(ours.to_torch()(x), theirs(x), atol=0)
    assert copy.deepcopy(ours).bias_hh is None
