"""nn.LSTM's parameter names on ``lstm.LSTM`` (``weight_ih_l0``, ``all_weights``, ...): read-only
copies in nn.LSTM's layout, equal to the nn.LSTM the model was converted from."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

import lstm
from toy_cells import CoupledGateLSTM


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True), (3, False)])
def test_names_and_values_equal_nn_lstm(num_layers: int, bidirectional: bool, bias: bool) -> None:
    theirs = nn.LSTM(3, 4, num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    ours = lstm.LSTM.from_torch(theirs)
    assert ours._all_weights == theirs._all_weights
    assert ours._flat_weights_names == theirs._flat_weights_names
    for name in theirs._flat_weights_names:
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    for cell_ours, cell_theirs in zip(ours.all_weights, theirs.all_weights, strict=True):
        assert len(cell_ours) == len(cell_theirs)
        for a, b in zip(cell_ours, cell_theirs, strict=True):
            assert torch.equal(a, b)
    for a, b in zip(ours._flat_weights, theirs._flat_weights, strict=True):
        assert torch.equal(a, b)


def test_names_follow_training_without_conversion() -> None:
    """The copies are computed on each access: after a change of ``i2h`` they show it."""
    model = lstm.LSTM(3, 4)
    with torch.no_grad():
        model.i2h.weight.add_(1.0)
    assert torch.equal(model.weight_ih_l0, model.to_torch().weight_ih_l0)


H = 4
"""The hidden size of the models below: a gate block is H rows."""

WRITES: dict[str, Callable[[lstm.LSTM], object]] = {
    "nn.init.zeros_": lambda m: nn.init.zeros_(m.weight_ih_l0),
    "forget bias via .data slice": lambda m: m.bias_ih_l0.data[H : 2 * H].fill_(1.0),
    ".data.copy_": lambda m: m.weight_hh_l0.data.copy_(torch.zeros(4 * H, H)),
    "nn.init.orthogonal_ on all_weights": lambda m: nn.init.orthogonal_(m.all_weights[0][1]),
    "uniform_ on _flat_weights": lambda m: m._flat_weights[0].uniform_(),
    "item assignment": lambda m: m.bias_hh_l0.__setitem__(0, 1.0),
    "augmented assignment": lambda m: m.weight_ih_l0.__iadd__(1.0),
    "out= of an operation": lambda m: torch.add(torch.ones(4 * H), 1.0, out=m.bias_ih_l0),
    "detach().zero_()": lambda m: m.weight_ih_l0.detach().zero_(),
    "freezing with requires_grad_": lambda m: m.weight_ih_l0.requires_grad_(False),
    "freezing with .requires_grad =": lambda m: setattr(m.weight_hh_l0, "requires_grad", False),
    "setting .data": lambda m: setattr(m.weight_hh_l0, "data", torch.zeros(4 * H, H)),
    "reading .grad (a copy has none)": lambda m: m.weight_hh_l0.grad,
}
"""What code written for nn.LSTM does through its names; on lstm.LSTM each must raise."""


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("engine", ["auto", "reference", "hoisted"])
def test_every_write_through_a_copy_raises_and_leaves_the_model_as_it_was(
    write: str, engine: str
) -> None:
    model = lstm.LSTM(3, H, num_layers=2, bidirectional=True)
    model.engine = engine
    x = torch.randn(2, 5, 3)
    before, before_state = model(x), copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match=r"^LSTM\.\w+ is a read-only copy of (i2h|h2h)") as info:
        WRITES[write](model)
    message = str(info.value)
    assert "use lstm.nn.LSTM" in message
    assert "to_torch()" in message
    for name, value in model.state_dict().items():
        assert torch.equal(value, before_state[name]), name
    after = model(x)
    assert torch.equal(after[0], before[0])
    assert all(p.requires_grad for p in model.parameters())


def test_reading_a_copy_still_works_and_gives_plain_tensors() -> None:
    model = lstm.LSTM(3, H)
    copy_ = model.weight_ih_l0
    assert torch.equal(copy_, model.to_torch().weight_ih_l0)
    assert type(copy_ * 2) is torch.Tensor  # new tensors are the caller's to change
    clone = copy_.clone()
    clone.add_(1.0)
    assert torch.equal(clone, model.to_torch().weight_ih_l0 + 1.0)
    array = copy_.numpy()
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[0, 0] = 1.0
    assert float(copy_.sum()) == pytest.approx(float(model.i2h.weight.detach().sum()), abs=1e-5)


def test_a_saved_copy_loads_as_a_plain_tensor() -> None:
    buffer = io.BytesIO()
    torch.save({"weight": lstm.LSTM(3, H).weight_ih_l0}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)  # weights_only=True: no class of this package needed
    assert type(loaded["weight"]) is torch.Tensor


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "proj_size"), [(1, False, 0), (2, True, 2)]
)
def test_an_nn_lstm_state_dict_loads_converted_exactly(
    num_layers: int, bidirectional: bool, proj_size: int, bias: bool
) -> None:
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    theirs = nn.LSTM(3, H, proj_size=proj_size, batch_first=True, **options)
    ours = lstm.LSTM(3, H, proj_size=proj_size, **options)
    ours.load_state_dict(theirs.state_dict())  # strict
    expected = lstm.LSTM.from_torch(theirs)
    for name, value in expected.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)


def test_an_nn_lstm_state_dict_loads_inside_a_larger_model() -> None:
    """A DeepLog-style model saved with nn.LSTM loads into the same model on lstm.LSTM."""
    theirs = nn.ModuleDict({"lstm": nn.LSTM(1, H, 2, batch_first=True), "fc": nn.Linear(H, 3)})
    ours = nn.ModuleDict({"lstm": lstm.LSTM(1, H, 2), "fc": nn.Linear(H, 3)})
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 10, 1)
    torch.testing.assert_close(ours["lstm"](x), theirs["lstm"](x), rtol=0, atol=1e-6)


def test_a_wrong_size_in_an_nn_lstm_state_dict_is_torch_s_size_error() -> None:
    state = nn.LSTM(3, H + 1, batch_first=True).state_dict()
    with pytest.raises(RuntimeError, match=r"size mismatch for i2h\.weight"):
        lstm.LSTM(3, H).load_state_dict(state)


def test_a_cell_of_its_own_refuses_an_nn_lstm_state_dict() -> None:
    state = nn.LSTM(3, H, batch_first=True).state_dict()
    for model in (lstm.PeepholeLSTM(3, H), CoupledGateLSTM(3, H)):
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(
            ValueError, match=r"^\w+\.load_state_dict: got torch\.nn\.LSTM's keys"
        ) as info:
            model.load_state_dict(state)
        assert "lstm.nn.LSTM" in str(info.value)
        assert "LSTM.from_torch()" in str(info.value)
        for name, value in model.state_dict().items():
            assert torch.equal(value, before[name]), name


def test_a_state_dict_with_both_layouts_is_refused() -> None:
    model = lstm.LSTM(3, H)
    state = {**model.state_dict(), **nn.LSTM(3, H).state_dict()}
    with pytest.raises(
        ValueError, match=r"expected either torch\.nn\.LSTM's keys or this module's"
    ):
        model.load_state_dict(state)


@pytest.mark.parametrize("name", ["weight_ih_l0", "bias_hh_l1_reverse", "all_weights"])
def test_assigning_a_torch_name_raises(name: str) -> None:
    model = lstm.LSTM(3, 4, num_layers=2, bidirectional=True)
    with pytest.raises(AttributeError, match=rf"LSTM: {name} is a read-only copy.*from_torch"):
        setattr(model, name, nn.Parameter(torch.zeros(16, 3)))
    assert name not in dict(model.named_parameters())


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("weight_ih_l1", {}),
        ("weight_ih_l0_reverse", {}),
        ("bias_ih_l0", {"bias": False}),
        ("weight_ih_l01", {}),
    ],
)
def test_a_name_the_model_lacks_raises_attribute_error(name: str, options: dict[str, bool]) -> None:
    model = lstm.LSTM(3, 4, **options)
    assert not hasattr(model, name)
    with pytest.raises(AttributeError, match=rf"LSTM has no attribute '{name}': its nn.LSTM names"):
        getattr(model, name)


def test_other_names_keep_nn_module_behaviour() -> None:
    model = lstm.LSTM(3, 4)
    assert model.i2h is model._modules["i2h"]
    with pytest.raises(AttributeError, match="'LSTM' object has no attribute 'weight'"):
        _ = model.weight


def test_a_class_with_its_own_step_has_no_torch_names() -> None:
    model = lstm.PeepholeLSTM(3, 4)
    with pytest.raises(AttributeError, match="only for a class that computes the plain LSTM"):
        _ = model.weight_ih_l0
    assert not hasattr(model, "all_weights")


def test_deepcopy_and_layer_views_still_work() -> None:
    model = lstm.LSTM(3, 4, num_layers=2)
    clone = copy.deepcopy(model)
    assert torch.equal(clone.weight_hh_l1, model.weight_hh_l1)
    view = model.layer_cell(1)
    assert view.i2h is model.i2h_l1
