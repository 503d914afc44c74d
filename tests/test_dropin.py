"""nn.LSTM's callers run unchanged: the "drop-in" issue, one section per point.

Each test compares with ``torch.nn.LSTM`` where it has an answer, and would fail without
the change it guards.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstm
from builders import DOUBLE, NAMES, build, close
from builders import parts as parts_of
from lstm import CELLS, LSTM, Recurrent

# ------------------------------------------------------------------ 1. nn.LSTM's positional order

POSITIONAL = ("num_layers", "bias", "batch_first", "dropout", "bidirectional")


def test_lstm_takes_nn_lstm_positional_arguments() -> None:
    model = LSTM(16, 32, 2, False, False, 0.25, True)
    got = [model.num_layers, model.bias, model.batch_first, model.dropout, model.bidirectional]
    assert got == [2, False, False, 0.25, True]


def test_positional_lstm_equals_nn_lstm_built_the_same_way() -> None:
    theirs = nn.LSTM(3, 4, 2, True, False, 0.0, True, dtype=DOUBLE)
    ours = LSTM.from_torch(theirs)
    same = LSTM(3, 4, 2, True, False, 0.0, True, dtype=DOUBLE)
    same.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3, dtype=DOUBLE)  # (seq_len, batch, features): batch_first=False
    close(same(x), theirs(x))


@pytest.mark.parametrize("cls", sorted(set(CELLS.values()), key=lambda cls: cls.__name__))
def test_every_cell_keeps_the_positional_order(cls: type[Recurrent]) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    names = [parameter.name for parameter in parameters]
    lanes = ["k"] if "k" in names[:3] else []
    start = 2 + len(lanes)
    assert names[:start] == ["input_size", "hidden_size", *lanes]
    if lanes:  # after k, the original's own options (max_pooling), then keyword-only ones
        kinds = [parameter.kind for parameter in parameters[start:]]
        assert kinds[-1] is inspect.Parameter.VAR_KEYWORD
        assert all(kind is not inspect.Parameter.VAR_POSITIONAL for kind in kinds)
        return
    positional = parameters[start : start + len(POSITIONAL)]
    assert [parameter.name for parameter in positional] == list(POSITIONAL)
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in positional)
    rest = parameters[start + len(POSITIONAL) :]
    if rest and rest[0].name == "proj_size":  # the LSTM family: nn.LSTM's eighth
        assert rest[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        rest = rest[1:]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


@pytest.mark.parametrize("name", NAMES)
def test_every_cell_builds_with_positional_layers(name: str) -> None:
    cls = CELLS[name]
    lanes = (3,) if "k" in inspect.signature(cls).parameters else ()
    if lanes:
        model = cls(3, 4, *lanes, num_layers=2, bidirectional=True)  # type: ignore[call-arg]
    else:
        model = cls(3, 4, 2, True, True, 0.0, True)
    assert (model.num_layers, model.num_directions) == (2, 2)


# ------------------------------------------------------------------ 6. flatten_parameters


@pytest.mark.parametrize("name", NAMES)
def test_flatten_parameters_is_a_no_op_returning_none(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    x = torch.randn(2, 3, 3, dtype=DOUBLE)
    expected = model(x)
    assert model.flatten_parameters() is None
    assert nn.LSTM(3, 4).flatten_parameters() is None  # the same answer as nn.LSTM's
    close(model.state_dict(), before, atol=0)
    close(model(x), expected, atol=0)


# ------------------------------------------------------------------ 4. dropout=1.0


@pytest.mark.parametrize("engine", ["auto", "hoisted", "reference"])
def test_dropout_one_drops_the_lower_layer_as_nn_lstm(engine: str) -> None:
    theirs = nn.LSTM(3, 4, 2, True, True, 1.0, True, dtype=DOUBLE).train()
    ours = LSTM.from_torch(theirs)  # training mode copied
    ours.engine = engine
    assert ours.dropout == 1.0
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    got, want = ours(x), theirs(x)  # every draw drops everything: deterministic
    close(got, want)
    # The upper layer saw zeros: its outputs are those of layer 1 alone on a zero input.
    upper = nn.LSTM(8, 4, 1, True, True, 0.0, True, dtype=DOUBLE)
    for name, value in upper.named_parameters():
        value.data.copy_(getattr(theirs, name.replace("_l0", "_l1")))
    close(got[0], upper(torch.zeros(2, 5, 8, dtype=DOUBLE))[0])
    # Gradients too: nothing reaches the lower layer's weights through the outputs.
    ours_grads = torch.autograd.grad(got[0].sum(), [ours.i2h.weight, ours.h2h_l1.weight])
    theirs_grads = torch.autograd.grad(want[0].sum(), [theirs.weight_ih_l0, theirs.weight_hh_l1])
    assert ours_grads[0].abs().max() == 0
    assert theirs_grads[1].abs().max() > 0
    # Same gradient up to the order of the gate blocks (f, i, o, g here; i, f, g, o there).
    close(ours_grads[1].abs().sum(), theirs_grads[1].abs().sum(), atol=1e-12)


# ------------------------------------------------------------------ 7. shape errors as RuntimeError

ZEROS = torch.zeros


def _shape_mistakes() -> dict[str, tuple[Any, Any]]:
    """Calls nn.LSTM refuses with RuntimeError: (x, hidden) for a 2-layer batch-first model."""
    x = torch.randn(2, 5, 3)
    return {
        "input width": (torch.randn(2, 5, 7), None),
        "hidden batch": (x, (ZEROS(2, 3, 4), ZEROS(2, 2, 4))),
        "hidden layers": (x, (ZEROS(1, 2, 4), ZEROS(2, 2, 4))),
        "hidden width": (x, (ZEROS(2, 2, 5), ZEROS(2, 2, 4))),
        "state shape": (x, (ZEROS(2, 2, 4), ZEROS(2, 2, 5))),
    }


@pytest.mark.parametrize("mistake", sorted(_shape_mistakes()))
def test_shape_errors_are_caught_as_nn_lstm_s_runtime_error(mistake: str) -> None:
    x, hidden = _shape_mistakes()[mistake]
    theirs = nn.LSTM(3, 4, 2, batch_first=True)
    with pytest.raises(RuntimeError):  # what a client written for nn.LSTM catches
        theirs(x, hidden)
    ours = LSTM(3, 4, 2)
    with pytest.raises(RuntimeError, match=r"^LSTM: expected .*, got \(") as caught:
        ours(x, hidden)
    assert type(caught.value) is lstm.ShapeError
    assert isinstance(caught.value, ValueError)  # the existing `except ValueError` still works


def _more_shape_mistakes() -> dict[str, Callable[[], Any]]:
    """Shape errors nn.LSTM has no counterpart for, raised as the same class."""
    model = LSTM(3, 4)
    x, hidden = torch.randn(2, 3), torch.zeros(2, 4)

    class WrongInitial(LSTM):
        def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x.new_zeros(x.shape[0], 5), x.new_zeros(x.shape[0], 4)

    return {
        "input rank": lambda: model(torch.randn(2, 5, 3, 1)),
        "lengths shape": lambda: model(torch.randn(2, 5, 3), lengths=torch.tensor([[5, 5]])),
        "empty sequence": lambda: model(torch.randn(2, 0, 3)),
        "step x": lambda: model.forward_cell(torch.randn(2, 7), hidden, hidden),
        "step hidden": lambda: model.forward_cell(x, torch.zeros(3, 4), hidden),
        "step state": lambda: model.forward_cell(x, hidden, torch.zeros(2, 5)),
        "init_hidden": lambda: WrongInitial(3, 4)(torch.randn(2, 5, 3)),
        "packed data": lambda: model(
            nn.utils.rnn.pack_padded_sequence(torch.randn(2, 5, 7), [5, 4], batch_first=True)
        ),
    }


@pytest.mark.parametrize("mistake", sorted(_more_shape_mistakes()))
def test_every_shape_error_is_one_class(mistake: str) -> None:
    with pytest.raises(lstm.ShapeError, match=r"expected .*, got ") as caught:
        _more_shape_mistakes()[mistake]()
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, ValueError)


def test_shape_error_is_exported_and_documented() -> None:
    assert "ShapeError" in lstm.__all__
    assert issubclass(lstm.ShapeError, ValueError)
    assert issubclass(lstm.ShapeError, RuntimeError)
    api = Path(__file__).resolve().parent.parent / "docs" / "api.md"
    assert "lstm.ShapeError" in api.read_text(encoding="utf-8")


# ------------------------------------------------------------------ 5. lengths as a list or tuple


@pytest.mark.parametrize("container", [list, tuple])
@pytest.mark.parametrize("name", NAMES)
def test_lengths_may_be_a_list_or_tuple_of_ints(name: str, container: type) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(3, 5, 3, dtype=DOUBLE)
    expected = model(x, lengths=torch.tensor([5, 2, 4]))
    close(model(x, lengths=container([5, 2, 4])), expected)


def test_list_lengths_match_nn_lstm_on_packed_input() -> None:
    theirs = nn.LSTM(3, 4, 1, True, True, dtype=DOUBLE)
    ours = LSTM.from_torch(theirs)
    x, lengths = torch.randn(3, 5, 3, dtype=DOUBLE), [5, 2, 4]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, final = theirs(packed)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=5)
    close(ours(x, lengths=lengths), (padded, final))


@pytest.mark.parametrize(
    ("lengths", "given"),
    [
        ([5, 2.0], "float 2.0 at index 1"),
        ((True, 5), "bool True at index 0"),
        ([[5], [2]], "list [5] at index 0"),
        ([5, "2"], "str '2' at index 1"),
        ([5, torch.tensor(2)], "Tensor tensor(2) at index 1"),
    ],
)
def test_bad_list_entries_name_the_expected_and_given_types(lengths: Any, given: str) -> None:
    expected = "LSTM: expected lengths to be a list or tuple of ints, got "
    with pytest.raises(TypeError) as caught:
        LSTM(3, 4)(torch.randn(2, 5, 3), lengths=lengths)
    assert str(caught.value) == expected + given


# ------------------------------------------------------------------ 3. an empty batch


def test_empty_batch_matches_nn_lstm_shapes_and_backward() -> None:
    theirs = nn.LSTM(3, 4, 2, True, False, 0.0, True, dtype=DOUBLE)
    ours = LSTM.from_torch(theirs)
    for engine in ("auto", "hoisted", "reference"):
        ours.engine = engine
        x = torch.randn(5, 0, 3, dtype=DOUBLE, requires_grad=True)  # (seq_len, batch=0, F)
        got, want = ours(x), theirs(x)
        assert [t.shape for t in (got[0], *got[1])] == [t.shape for t in (want[0], *want[1])]
        assert got[0].shape == (5, 0, 8)
        assert got[1][0].shape == (4, 0, 4)
        (got[0].sum() + got[1][0].sum() + got[1][1].sum()).backward()
        assert x.grad is not None
        assert x.grad.shape == x.shape
        grads = [p.grad for p in ours.parameters()]
        assert all(g is not None and g.abs().max() == 0 for g in grads), engine
        ours.zero_grad()


@pytest.mark.parametrize("engine", ["auto", "hoisted", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_every_cell_runs_an_empty_batch(name: str, engine: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    model.engine = engine
    full = model(torch.randn(2, 5, 3, dtype=DOUBLE))
    x = torch.randn(0, 5, 3, dtype=DOUBLE, requires_grad=True)
    for lengths in (None, [], torch.zeros(0, dtype=torch.int64)):
        out, (hidden, state) = model(x, lengths=lengths)
        assert out.shape == (0, 5, 8)
        assert hidden.shape == (4, 0, 4)
        for empty, two in zip(parts_of(state), parts_of(full[1][1]), strict=True):
            assert empty.shape == (two.shape[0], 0, two.shape[2])
        loss = out.sum() + hidden.sum() + sum(part.sum() for part in parts_of(state))
        (grad,) = torch.autograd.grad(loss, [x])
        assert grad.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_takes_given_states_and_returns_all_states(name: str) -> None:
    model = build(name, batch_first=False)
    _, (hidden, state) = model(torch.randn(4, 2, 3, dtype=DOUBLE))
    empty = (
        hidden[:, :0],
        tuple(p[:, :0] for p in state) if isinstance(state, tuple) else state[:, :0],
    )
    out, final, every = model(torch.randn(4, 0, 3, dtype=DOUBLE), empty, return_all_states=True)
    assert out.shape == (4, 0, 4)
    close(final, empty, atol=0)
    assert all(part.shape[-3:-1] == (4, 0) for part in parts_of(every))


def test_empty_sequence_is_refused_as_nn_lstm_refuses_it() -> None:
    # Decision: seq_len 0 stays an error (there is no last step to read the states at), a
    # ShapeError, so that nn.LSTM's `except RuntimeError` catches it as it catches nn.LSTM's.
    x = torch.randn(2, 0, 3)
    with pytest.raises(RuntimeError, match="sequence length"):
        nn.LSTM(3, 4, batch_first=True)(x)
    message = r"^LSTM: expected seq_len >= 1, got an input of shape \(2, 0, 3\)$"
    with pytest.raises(lstm.ShapeError, match=message):
        LSTM(3, 4)(x)
    with pytest.raises(RuntimeError, match="expected seq_len >= 1"):
        LSTM(3, 4)(torch.randn(0, 0, 3))  # empty in both: the sequence is what is refused


# ------------------------------------------------------------------ 12. the original's step shapes


class OriginalStyle(LSTM):
    """As the original implementation wrote it: initHidden gives (1, batch, hidden_size)."""

    def initHidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = x.new_zeros(1, x.shape[0], self.hidden_size)
        return zeros, zeros.clone()


@pytest.mark.parametrize("hook", ["initHidden", "init_hidden"])
def test_an_init_hidden_of_leading_one_matches_the_standard_path(hook: str) -> None:
    def original(self: LSTM, x: Tensor) -> tuple[Tensor, Tensor]:
        filled = x.new_full((1, x.shape[0], self.hidden_size), 0.5)
        return filled, -filled

    plain = LSTM(3, 4, 2, bidirectional=True, dtype=DOUBLE)
    custom = type("Original", (LSTM,), {hook: original})(3, 4, 2, dtype=DOUBLE, bidirectional=True)
    custom.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    given = torch.full((4, 2, 4), 0.5, dtype=DOUBLE)
    for engine in ("auto", "reference"):
        plain.engine = custom.engine = engine
        close(custom(x), plain(x, (given, -given)), atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_forward_cell_takes_and_gives_the_original_layout(name: str) -> None:
    model = build(name)
    x = torch.randn(2, 3, dtype=DOUBLE)
    hidden, state = model.init_hidden(torch.randn(2, 1, 3, dtype=DOUBLE))
    hidden = hidden + torch.randn_like(hidden)
    state = tuple(p + 0.1 for p in state) if isinstance(state, tuple) else state + 0.1
    want_hidden, want_state = model.forward_cell(x, hidden, state)
    leading = [p.unsqueeze(0) for p in parts_of(state)]
    original_state = tuple(leading) if isinstance(state, tuple) else leading[0]
    got_hidden, got_state = model.forward_cell(x, hidden.unsqueeze(0), original_state)
    assert got_hidden.shape == (1, *want_hidden.shape)  # the layout the caller used
    close(got_hidden, want_hidden.unsqueeze(0), atol=1e-12)
    assert type(got_state) is type(want_state)
    for got, want in zip(parts_of(got_state), parts_of(want_state), strict=True):
        close(got, want.unsqueeze(0), atol=1e-12)


def test_original_loop_of_forward_cell_matches_forward() -> None:
    model = OriginalStyle(3, 4, dtype=DOUBLE)
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    hidden, state = model.initHidden(x)  # (1, 2, 4) each, as the original's
    outputs = []
    for t in range(x.shape[1]):
        hidden, state = model.forward_cell(x[:, t], hidden, state)
        outputs.append(hidden)
    expected, (last_hidden, last_state) = model(x)
    close(torch.cat(outputs).transpose(0, 1), expected, atol=1e-12)
    close((hidden, state), (last_hidden, last_state), atol=1e-12)


@pytest.mark.parametrize(
    ("hidden_shape", "state_shape", "message"),
    [
        ((2, 2, 4), (2, 2, 4), r"expected hidden of shape \(batch, 4\) or \(1, batch, 4\) "),
        ((1, 2, 4), (2, 4), r"expected state with a leading dimension of 1, .*got \(2, 4\)$"),
        ((1, 2, 4), (3, 2, 4), r"expected state with a leading dimension of 1, .*got \(3, 2, 4\)"),
    ],
)
def test_only_a_leading_one_is_taken(
    hidden_shape: tuple[int, ...], state_shape: tuple[int, ...], message: str
) -> None:
    model = LSTM(3, 4)
    x = torch.randn(2, 3)
    with pytest.raises(lstm.ShapeError, match="^LSTM.forward_cell: " + message):
        model.forward_cell(x, torch.zeros(hidden_shape), torch.zeros(state_shape))

    class Wrong(LSTM):
        def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return torch.zeros(hidden_shape), torch.zeros(state_shape)

    with pytest.raises(lstm.ShapeError, match="^Wrong.init_hidden: " + message):
        Wrong(3, 4)(torch.randn(2, 5, 3))
