"""Generated bad input: every case raises a ValueError or TypeError that names what was
expected and what was given, for every registered cell and every core entry point.

Families: constructor arguments (through ``create`` and through the classes), and
``forward``'s input, initial state, lengths and options, ``forward_cell`` (on the module
and on every ``layer_cell`` view), and the conversions to and from ``torch.nn.LSTM``. Each
case holds exactly one defect, so the test knows what the message must say: the error's
class, a message that starts with the owner (``"LSTM: "``, ``"SLSTM.forward_cell: "``) and
says ``expected <what>``, and, after ``", got "``, a rendering of the bad value (its shape,
dtype, type, value or device). A RuntimeError or IndexError from inside torch, or no error
at all, fails the case.

Each family runs twice: a default test, run for each registered cell with 10 cases (the
conversions: 50 cases) from the "ci" Hypothesis profile's fixed seed, and a ``slow`` twin
that draws the cell too, with the "slow" profile (2,000 cases; ``python -m pytest -m slow``).
The numbers of cases actually tried are printed at the end of the session (see
``conftest.counted``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from builders import NAMES, build, takes_lanes
from builders import parts as state_parts
from conftest import SLOW, counted
from lstm import CELLS, LSTM, Recurrent, create
from lstm.driver import ENGINES

INPUT, HIDDEN, LANES = 3, 4, 2
FLOAT = torch.float32  # the models' dtype
PER_CELL = settings(max_examples=10)
"""The default tests run once per registered cell, so every cell is covered every run."""
OTHER_FLOATS = [torch.float64, torch.float16, torch.bfloat16]
NOT_FLOATS = [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64]


def assert_named(
    call: Callable[[], object], error: type[Exception], prefix: str, about: str, given: str
) -> None:
    """``call()`` raises ``error`` with the message ``<prefix>...expected ...<about>..., got
    ...<given>...``: it names what was expected and renders what was given."""
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    message = str(caught.value)
    # isinstance: shape errors are lstm.ShapeError, a ValueError that is also a RuntimeError.
    assert isinstance(caught.value, error), message
    assert message.startswith(prefix), message
    expected, separator, got = message.partition(", got ")
    assert separator, message
    assert "expected " in expected, message
    assert about in expected, f"{about!r} is not named in {message!r}"
    assert given in got, f"{given!r} is not rendered in {message!r}"


@functools.cache
def built(
    name: str, num_layers: int = 1, bidirectional: bool = False, batch_first: bool = True
) -> Recurrent:
    """One model per configuration, shared by the cases: every case fails before it computes."""
    return build(
        name,
        INPUT,
        HIDDEN,
        k=LANES,
        dtype=FLOAT,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )


def draw_model(data: st.DataObject, name: str | None) -> Recurrent:
    return built(
        name or data.draw(st.sampled_from(NAMES), label="cell"),
        data.draw(st.integers(1, 2), label="num_layers"),
        data.draw(st.booleans(), label="bidirectional"),
        data.draw(st.booleans(), label="batch_first"),
    )


def described(value: Any) -> str:
    """How a wrong structure is rendered: ``tuple of length 2``, ``list of length 3``, ``str``."""
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def shape_str(shape: Any) -> str:
    """How a message renders a shape: ``(4, 7, 15)``, ``(3,)``, ``(batch, 16)``."""
    inner = ", ".join(str(size) for size in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def typed(value: Any) -> str:
    """How ``check_int`` and friends render a value of the wrong type: ``float 3.0``."""
    return f"{type(value).__name__} {value!r}"


def torch_refuses(device: str) -> bool:
    try:
        torch.device(device)
    except Exception:  # any refusal: what the model then raises is what is checked
        return True
    return False


sizes = st.integers(1, 3)
shapes = st.lists(st.integers(0, 4), max_size=4).map(tuple)
non_tensors = st.one_of(
    st.none(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.lists(st.floats(-1, 1), max_size=3),
    st.builds(np.zeros, st.tuples(sizes, sizes)),
)
not_ints = st.one_of(
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
    st.none(),
    st.builds(np.int64, st.integers(1, 5)),
    st.builds(torch.tensor, st.integers(1, 5)),
)
not_bools = st.one_of(
    st.integers(), st.floats(), st.text(max_size=3), st.none(), st.builds(np.bool_, st.booleans())
)


# ------------------------------------------------------------------ constructors


def bad_argument(data: st.DataObject, cls: type[Recurrent]) -> tuple[dict[str, Any], str, Any]:
    """One invalid keyword (plus what it needs), the argument named, and the expected error."""
    names = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional"]
    names += ["dropout", "recurrent_dropout", "zoneout", "dtype", "device"]
    names += ["k"] if takes_lanes(cls) else []
    names += ["forget_bias", "proj_size"] if issubclass(cls, LSTM) else []
    name = data.draw(st.sampled_from(names), label="argument")
    if name == "proj_size":
        return bad_proj_size(data, cls)
    if name in ("input_size", "hidden_size", "num_layers", "k"):
        # k=None is create's default, not a mistake.
        wrong_type = not_ints.filter(lambda value: name != "k" or value is not None)
        value = data.draw(st.one_of(st.integers(max_value=0), wrong_type), label=name)
        if isinstance(value, int) and not isinstance(value, bool):
            return {name: value}, name, (ValueError, str(value))
        return {name: value}, name, (TypeError, typed(value))
    if name in ("bias", "batch_first", "bidirectional"):
        value = data.draw(not_bools, label=name)
        return {name: value}, name, (TypeError, typed(value))
    if name in ("dropout", "recurrent_dropout", "zoneout"):
        outside = st.one_of(st.floats(), st.integers()).filter(lambda p: not 0 <= p < 1)
        value = data.draw(st.one_of(outside, st.booleans(), st.text(max_size=3), st.none()))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {name: value}, name, (ValueError, str(value))
        return {name: value}, name, (TypeError, typed(value))
    if name == "dtype":
        value = data.draw(st.sampled_from([*NOT_FLOATS, "float32", float, 32, np.float32]))
        return {name: value}, name, (TypeError, repr(value))
    if name == "device":
        unknown = st.one_of(
            st.text(max_size=8).filter(torch_refuses),
            st.integers(max_value=-1),
            st.integers(min_value=2**63),  # beyond int64
        )
        wrong_type = st.one_of(st.floats(), st.booleans(), st.lists(st.integers(), max_size=2))
        value = data.draw(st.one_of(unknown, wrong_type), label=name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return {name: value}, name, (ValueError, repr(value))
        return {name: value}, name, (TypeError, typed(value))
    # forget_bias: not a number, not finite, or without biases to set.
    kind = data.draw(st.sampled_from(["type", "finite", "bias"]), label="forget_bias")
    if kind == "type":
        value = data.draw(st.one_of(st.booleans(), st.text(max_size=3), st.just([1.0])))
        return {name: value}, name, (TypeError, typed(value))
    if kind == "finite":
        value = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        return {name: value}, name, (ValueError, str(value))
    value = data.draw(st.floats(-5, 5), label=name)
    return {name: value, "bias": False}, name, (ValueError, "bias=False")


def bad_proj_size(data: st.DataObject, cls: type[Recurrent]) -> tuple[dict[str, Any], str, Any]:
    """A wrong type, a negative size, one not below hidden_size, or any positive size for a
    class that builds its own cells (only LSTM's cell has h2p)."""
    kinds = ["type", "negative", "too large"] + (["unsupported"] if cls is not LSTM else [])
    kind = data.draw(st.sampled_from(kinds), label="proj_size")
    if kind == "type":
        value = data.draw(not_ints, label="value")
        return {"proj_size": value}, "proj_size", (TypeError, typed(value))
    if kind == "negative":
        value = data.draw(st.integers(max_value=-1), label="value")
        return {"proj_size": value}, "proj_size", (ValueError, str(value))
    low, high = (HIDDEN, HIDDEN + 4) if kind == "too large" else (1, HIDDEN - 1)
    value = data.draw(st.integers(low, high), label="value")
    return {"proj_size": value}, "proj_size", (ValueError, f"proj_size={value}")


def check_constructor(data: st.DataObject, name: str | None = None) -> None:
    name = name or data.draw(st.sampled_from(NAMES), label="cell")
    cls = CELLS[name]
    route = data.draw(st.sampled_from(["create", "class", "registry"]), label="route")
    if route == "registry":  # what only create checks: the name, and k for a cell without lanes
        if takes_lanes(cls) or data.draw(st.booleans(), label="unknown name"):
            unknown = data.draw(  # (a colon makes it a module:Class to import)
                st.text(max_size=6).filter(lambda text: text not in CELLS and ":" not in text)
            )
            message = (
                f"unknown cell {unknown!r}; expected one of {NAMES}, "
                "or a class as 'package.module:Class'"
            )
            with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                create(unknown, INPUT, HIDDEN)
            return
        lanes = data.draw(st.integers(-2, 8), label="k")
        assert_named(
            lambda: create(name, INPUT, HIDDEN, k=lanes),
            ValueError,
            f"cell {name!r} has no lanes; expected k=None",
            "k=None",
            f"k={lanes}",
        )
        return
    arguments, argument, (error, given) = bad_argument(data, cls)
    input_size = arguments.pop("input_size", INPUT)
    hidden_size = arguments.pop("hidden_size", HIDDEN)
    if route == "create":
        call = functools.partial(create, name, input_size, hidden_size)
    else:
        if takes_lanes(cls):
            arguments.setdefault("k", LANES)
        call = functools.partial(cls, input_size, hidden_size)
    assert_named(lambda: call(**arguments), error, f"{cls.__name__}: expected ", argument, given)


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_constructor_names_bad_arguments(name: str, data: st.DataObject) -> None:
    check_constructor(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_constructor_names_bad_arguments_slow(data: st.DataObject) -> None:
    check_constructor(data)


# ------------------------------------------------------------------ forward: input


def check_input(data: st.DataObject, name: str | None = None) -> None:
    model = draw_model(data, name)
    owner = f"{type(model).__name__}: expected "
    batch, seq_len = data.draw(sizes, label="batch"), data.draw(sizes, label="seq_len")
    good = (batch, seq_len, INPUT) if model.batch_first else (seq_len, batch, INPUT)
    kind = data.draw(
        st.sampled_from(
            ["type", "kind", "layout", "rank", "features", "empty", "dtype", "device", "packed"]
        ),
        label="defect",
    )
    x: Any
    if kind == "type":
        x = data.draw(non_tensors, label="input")
        expected = (TypeError, "input to be a torch.Tensor", type(x).__name__)
    elif kind == "kind":
        dtype = data.draw(st.sampled_from(NOT_FLOATS), label="dtype")
        x = torch.zeros(good, dtype=dtype)
        expected = (TypeError, "input to be a floating-point tensor", str(dtype))
    elif kind == "layout":
        if data.draw(st.booleans(), label="sparse"):
            x = torch.zeros(good).to_sparse()
            expected = (TypeError, "dense", "layout torch.sparse_coo")
        else:
            steps = [torch.zeros(n, INPUT) for n in range(1, batch + 2)]
            x = torch.nested.nested_tensor(steps, layout=torch.jagged)
            expected = (TypeError, "dense", "a nested tensor")
    elif kind == "rank":
        rank = data.draw(st.sampled_from([0, 1, 4, 5]), label="rank")
        x = torch.zeros(data.draw(st.lists(sizes, min_size=rank, max_size=rank)))
        expected = (ValueError, "input of rank 3", f"rank {rank} with shape {shape_str(x.shape)}")
    elif kind == "features":
        features = data.draw(st.integers(0, 8).filter(lambda n: n != INPUT), label="features")
        unbatched = data.draw(st.booleans(), label="unbatched")
        x = torch.zeros((seq_len, features) if unbatched else (*good[:2], features))
        expected = (ValueError, "input of shape", shape_str(x.shape))
    elif kind == "empty":
        unbatched = data.draw(st.booleans(), label="unbatched")
        if unbatched:
            x, about = torch.zeros(0, INPUT), "seq_len >= 1"
        else:
            # An empty batch alone is fine (as in nn.LSTM); an empty sequence is not.
            empty = data.draw(st.sampled_from(["seq_len", "both"]), label="empty")
            shape = {"batch": batch, "seq_len": seq_len}
            shape.update({key: 0 for key in shape if empty in (key, "both")})
            order = ("batch", "seq_len") if model.batch_first else ("seq_len", "batch")
            x = torch.zeros(shape[order[0]], shape[order[1]], INPUT)
            about = "seq_len >= 1"
        expected = (ValueError, about, shape_str(x.shape))
    elif kind == "dtype":
        dtype = data.draw(st.sampled_from(OTHER_FLOATS), label="dtype")
        x = torch.zeros(good, dtype=dtype)
        expected = (TypeError, f"input of dtype {FLOAT}", str(dtype))
    elif kind == "device":
        x = torch.zeros(good, device="meta")
        expected = (ValueError, "input on cpu", "meta")
    else:  # a PackedSequence of the wrong width or kind
        lengths = torch.tensor(
            data.draw(st.lists(st.integers(1, seq_len), min_size=batch, max_size=batch))
        )
        wrong_width = data.draw(st.booleans(), label="wrong width")
        features = data.draw(st.integers(1, 8).filter(lambda n: n != INPUT)) if wrong_width else 3
        dtype = FLOAT if wrong_width else data.draw(st.sampled_from(NOT_FLOATS[:4]))
        padded = torch.zeros(len(lengths), seq_len, features, dtype=dtype)
        x = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        if wrong_width:
            expected = (ValueError, "PackedSequence data of shape", shape_str(x.data.shape))
        else:
            expected = (TypeError, "PackedSequence data to be a floating-point", str(dtype))
    error, about, given_text = expected
    assert_named(lambda: model(x), error, owner, about, given_text)


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_forward_names_bad_input(name: str, data: st.DataObject) -> None:
    check_input(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_forward_names_bad_input_slow(data: st.DataObject) -> None:
    check_input(data)


# ------------------------------------------------------------------ forward: initial state


def bad_part(
    data: st.DataObject,
    name: str,
    part: Tensor,
    accepted: Callable[[tuple[int, ...]], bool],
    dtype_about: str,
) -> tuple[Any, tuple[type[Exception], str, str]]:
    """One tensor argument made wrong: its shape, dtype, kind, layout or device, or not a
    tensor at all; and the error due (class, what is named as expected, what is rendered)."""
    kinds = ["shape", "dtype", "kind", "layout", "type", "device"]
    kind = data.draw(st.sampled_from(kinds), label=name)
    if kind == "shape":
        shape = data.draw(shapes.filter(lambda shape: not accepted(shape)), label="shape")
        return torch.zeros(shape), (ValueError, f"{name} of shape", shape_str(shape))
    if kind == "layout":
        return part.to_sparse(), (TypeError, f"{name} to be a dense", "layout torch.sparse_coo")
    if kind == "dtype":
        dtype = data.draw(st.sampled_from(OTHER_FLOATS), label="dtype")
        return part.to(dtype), (TypeError, f"{name} of dtype {FLOAT} ({dtype_about})", str(dtype))
    if kind == "kind":
        dtype = data.draw(st.sampled_from(NOT_FLOATS), label="dtype")
        return part.to(dtype), (TypeError, f"{name} to be a floating-point tensor", str(dtype))
    if kind == "type":
        value = data.draw(non_tensors, label=name)
        return value, (TypeError, f"{name} to be a torch.Tensor", type(value).__name__)
    return part.to("meta"), (ValueError, f"{name} on cpu", "meta")


def check_state(data: st.DataObject, name: str | None = None) -> None:
    model = draw_model(data, name)
    owner = f"{type(model).__name__}: expected "
    batch, seq_len = data.draw(sizes, label="batch"), data.draw(sizes, label="seq_len")
    unbatched = data.draw(st.booleans(), label="unbatched")
    if unbatched:
        x = torch.randn(seq_len, INPUT)
    else:
        x = torch.randn((batch, seq_len, INPUT) if model.batch_first else (seq_len, batch, INPUT))
    with torch.no_grad():
        _, (hidden, state) = model(x)  # a valid initial state, in the stacked form
    cells = model.num_layers * model.num_directions

    def accepted(part: Tensor) -> Callable[[tuple[int, ...]], bool]:
        allowed = {tuple(part.shape)}
        if cells == 1 and not unbatched and part.shape[0] == 1:  # the page's (batch, hidden)
            allowed.add(tuple(part.shape[1:]))
        return allowed.__contains__

    parts = list(state_parts(state))
    names = [f"state[{index}]" for index in range(len(parts))] if len(parts) > 1 else ["state"]
    target = data.draw(st.sampled_from(["pair", "count", "hidden", *names]), label="target")
    if target == "pair":
        pair = data.draw(
            st.one_of(
                st.just(hidden),
                st.lists(st.just(hidden), max_size=4).filter(lambda p: len(p) != 2),
                st.lists(st.just(hidden), max_size=4).filter(lambda p: len(p) != 2).map(tuple),
                st.dictionaries(st.text(max_size=2), st.just(hidden), max_size=2),
                st.text(max_size=3),
            ),
            label="hidden",
        )
        given_text = described(pair)
        expected = (TypeError, "hidden to be a (hidden, state) tuple", given_text)
    elif target == "count":  # the wrong number of state tensors
        as_list = data.draw(st.booleans(), label="list")
        count = data.draw(
            st.integers(0, 5).filter(lambda n: len(parts) == 1 or n != len(parts)), label="count"
        )
        wrong = [parts[0]] * count
        given_state = wrong if as_list else tuple(wrong)
        pair = (hidden, given_state)
        if len(parts) > 1:
            about = f"state to be a tuple of {len(parts)} tensors"
            expected = (TypeError, about, described(given_state))
        else:
            expected = (TypeError, "state to be a torch.Tensor", type(given_state).__name__)
    elif target == "hidden":
        bad, expected = bad_part(data, "hidden", hidden, accepted(hidden), "the input's")
        pair = (bad, state)
    else:
        index = names.index(target)
        bad, expected = bad_part(data, target, parts[index], accepted(parts[index]), "the input's")
        changed = [bad if position == index else part for position, part in enumerate(parts)]
        pair = (hidden, tuple(changed) if isinstance(state, tuple) else changed[0])
    error, about, given_text = expected
    assert_named(lambda: model(x, pair), error, owner, about, given_text)


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_forward_names_bad_state(name: str, data: st.DataObject) -> None:
    check_state(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_forward_names_bad_state_slow(data: st.DataObject) -> None:
    check_state(data)


# ------------------------------------------------------------------ forward: lengths


def check_lengths(data: st.DataObject, name: str | None = None) -> None:
    model = draw_model(data, name)
    owner = f"{type(model).__name__}: "
    batch, seq_len = data.draw(st.integers(1, 4), label="batch"), data.draw(sizes, label="T")
    x = torch.randn((batch, seq_len, INPUT) if model.batch_first else (seq_len, batch, INPUT))
    valid = st.integers(1, seq_len)
    kind = data.draw(
        st.sampled_from(["values", "count", "rank", "dtype", "type", "device", "packed"]),
        label="defect",
    )
    lengths: Any
    if kind == "values":  # zero, negative or longer than seq_len
        values = data.draw(
            st.lists(st.integers(-3, seq_len + 3), min_size=batch, max_size=batch).filter(
                lambda values: not all(1 <= n <= seq_len for n in values)
            ),
            label="lengths",
        )
        lengths = torch.tensor(values)
        about = f"every length in 1..{seq_len}"
        expected = (ValueError, about, f"values in {min(values)}..{max(values)}")
    elif kind == "count":
        count = data.draw(st.integers(0, batch + 3).filter(lambda n: n != batch), label="count")
        lengths = torch.tensor(data.draw(st.lists(valid, min_size=count, max_size=count)))
        lengths = lengths.long()  # an empty list gives float32
        expected = (ValueError, f"lengths of shape ({batch},)", shape_str(lengths.shape))
    elif kind == "rank":
        shape = data.draw(st.sampled_from([(), (1, batch), (batch, 1), (batch, 2), (2, batch)]))
        lengths = torch.ones(shape, dtype=torch.int64)
        expected = (ValueError, f"lengths of shape ({batch},)", shape_str(shape))
    elif kind == "dtype":
        dtype = data.draw(st.sampled_from([*OTHER_FLOATS, FLOAT, torch.bool, torch.complex64]))
        lengths = torch.ones(batch, dtype=dtype)
        expected = (TypeError, "lengths to have an integer dtype", str(dtype))
    elif kind == "type":
        values = data.draw(st.lists(valid, min_size=batch, max_size=batch), label="lengths")
        lengths = data.draw(st.sampled_from([np.array(values), values[0], float(values[0])]))
        expected = (TypeError, "lengths to be a 1-D integer torch.Tensor", type(lengths).__name__)
        if data.draw(st.booleans(), label="a list with a bad entry"):
            # Lists and tuples of ints are taken (as pack_padded_sequence takes them).
            bad = data.draw(st.sampled_from([float(values[0]), True, [values[0]]]), label="bad")
            container = data.draw(st.sampled_from([list, tuple]), label="container")
            lengths = container([bad, *values[1:]])
            expected = (TypeError, "lengths to be a list or tuple of ints", type(bad).__name__)
    elif kind == "device":
        lengths = torch.ones(batch, dtype=torch.int64, device="meta")
        expected = (ValueError, "lengths with values", "meta")
    else:  # a PackedSequence carries its own
        values = torch.tensor(data.draw(st.lists(valid, min_size=batch, max_size=batch)))
        padded = x if model.batch_first else x.transpose(0, 1)
        x = pack_padded_sequence(padded, values, batch_first=True, enforce_sorted=False)
        lengths = values
        expected = (ValueError, "lengths=None", "a Tensor")
    error, about, given_text = expected
    assert_named(lambda: model(x, lengths=lengths), error, owner, about, given_text)


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_forward_names_bad_lengths(name: str, data: st.DataObject) -> None:
    check_lengths(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_forward_names_bad_lengths_slow(data: st.DataObject) -> None:
    check_lengths(data)


# ------------------------------------------------------------------ forward: options


def check_options(data: st.DataObject, name: str | None = None) -> None:
    model = draw_model(data, name)
    owner = f"{type(model).__name__}: expected "
    x = torch.randn(2, 3, INPUT)
    if data.draw(st.booleans(), label="engine"):
        engine = data.draw(
            st.one_of(st.text(max_size=10).filter(lambda text: text not in ENGINES), non_tensors),
            label="engine",
        )
        model.engine = engine
        try:
            assert_named(lambda: model(x), ValueError, owner, "engine in", repr(engine))
        finally:
            model.engine = "auto"
        return
    flag = data.draw(st.one_of(st.integers(), non_tensors), label="return_all_states")
    assert_named(
        lambda: model(x, return_all_states=flag),
        TypeError,
        owner,
        "return_all_states to be a bool",
        type(flag).__name__,
    )


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_forward_names_bad_options(name: str, data: st.DataObject) -> None:
    check_options(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_forward_names_bad_options_slow(data: st.DataObject) -> None:
    check_options(data)


# ------------------------------------------------------------------ forward_cell


def check_forward_cell(data: st.DataObject, name: str | None = None) -> None:
    model = draw_model(data, name)
    layer = data.draw(st.integers(0, model.num_layers - 1), label="layer")
    direction = data.draw(st.integers(0, model.num_directions - 1), label="direction")
    cell = model.layer_cell(layer, direction)
    owner = f"{type(model).__name__}.forward_cell: expected "
    width = INPUT if layer == 0 else HIDDEN * model.num_directions
    batch = data.draw(sizes, label="batch")
    x = torch.randn(batch, width)
    hidden, state = cell.init_hidden(x.unsqueeze(1))
    parts = list(state_parts(state))
    names = [f"state[{index}]" for index in range(len(parts))] if len(parts) > 1 else ["state"]
    target = data.draw(st.sampled_from(["x", "count", "hidden", *names]), label="target")
    arguments: list[Any] = [x, hidden, state]
    dtype_about = "the parameters' dtype"
    if target == "x":  # any batch will do: x sets it

        def accepted(shape: tuple[int, ...]) -> bool:
            return len(shape) == 2 and shape[1] == width

        arguments[0], expected = bad_part(data, "x", x, accepted, dtype_about)
    elif target == "count":
        as_list = data.draw(st.booleans(), label="list")
        count = data.draw(
            st.integers(0, 5).filter(lambda n: len(parts) == 1 or n != len(parts)), label="count"
        )
        wrong = [parts[0]] * count
        arguments[2] = wrong if as_list else tuple(wrong)
        if len(parts) > 1:
            about = f"state to be a tuple of {len(parts)} tensors"
            expected = (TypeError, about, described(arguments[2]))
        else:
            expected = (TypeError, "state to be a torch.Tensor", type(arguments[2]).__name__)
    elif target == "hidden":
        arguments[1], expected = bad_part(
            data, "hidden", hidden, {tuple(hidden.shape)}.__contains__, dtype_about
        )
    else:
        index = names.index(target)
        part = parts[index]
        bad, expected = bad_part(data, target, part, {tuple(part.shape)}.__contains__, dtype_about)
        changed = [bad if position == index else old for position, old in enumerate(parts)]
        arguments[2] = tuple(changed) if isinstance(state, tuple) else changed[0]
    error, about, given_text = expected
    assert_named(lambda: cell.forward_cell(*arguments), error, owner, about, given_text)


@pytest.mark.parametrize("name", NAMES)
@PER_CELL
@given(data=st.data())
@counted
def test_forward_cell_names_bad_arguments(name: str, data: st.DataObject) -> None:
    check_forward_cell(data, name)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_forward_cell_names_bad_arguments_slow(data: st.DataObject) -> None:
    check_forward_cell(data)


# ------------------------------------------------------------------ torch.nn.LSTM conversions

OTHER_MATH = sorted(
    name for name, cls in CELLS.items() if issubclass(cls, LSTM) and cls is not LSTM
)
NOT_AN_LSTM: list[Callable[[], Any]] = [
    lambda: nn.GRU(INPUT, HIDDEN),
    lambda: nn.RNN(INPUT, HIDDEN),
    lambda: nn.LSTMCell(INPUT, HIDDEN),
    lambda: nn.Linear(INPUT, HIDDEN),
    lambda: LSTM(INPUT, HIDDEN),
    lambda: create("cifg", INPUT, HIDDEN),
    lambda: None,
    lambda: "lstm",
    lambda: torch.zeros(INPUT),
]


def torch_lstms(data: st.DataObject) -> nn.LSTM:
    hidden_size = data.draw(st.integers(2, 5), label="hidden_size")
    return nn.LSTM(
        data.draw(sizes, label="input_size"),
        hidden_size,
        num_layers=data.draw(st.integers(1, 2), label="num_layers"),
        bidirectional=data.draw(st.booleans(), label="bidirectional"),
        batch_first=data.draw(st.booleans(), label="batch_first"),
        bias=data.draw(st.booleans(), label="bias"),
        proj_size=data.draw(st.integers(0, hidden_size - 1), label="proj_size"),
    )


def check_conversion(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["not an LSTM", "other math"]))
    if kind == "not an LSTM":
        module = data.draw(st.sampled_from(NOT_AN_LSTM), label="module")()
        about, given_text = "a torch.nn.LSTM", type(module).__name__
        assert_named(
            lambda: LSTM.from_torch(module), TypeError, "LSTM.from_torch: ", about, given_text
        )
    else:  # cells whose math is not torch.nn.LSTM's, either way
        name = data.draw(st.sampled_from(OTHER_MATH), label="cell")
        cls = CELLS[name]
        assert issubclass(cls, LSTM)
        about, given_text = "a class with LSTM's", f"{cls.__name__} which overrides"
        if data.draw(st.booleans(), label="to_torch"):
            model = built(name)
            assert isinstance(model, LSTM)
            prefix = f"{cls.__name__}.to_torch: "
            assert_named(model.to_torch, TypeError, prefix, about, given_text)
        else:
            module = torch_lstms(data)
            prefix = f"{cls.__name__}.from_torch: "
            assert_named(lambda: cls.from_torch(module), TypeError, prefix, about, given_text)


@given(data=st.data())
@counted
def test_conversion_names_bad_modules(data: st.DataObject) -> None:
    check_conversion(data)


@pytest.mark.slow
@settings(SLOW)
@given(data=st.data())
@counted
def test_conversion_names_bad_modules_slow(data: st.DataObject) -> None:
    check_conversion(data)
