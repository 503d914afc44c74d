"""nn.LSTM's parameter names on ``lstm.LSTM`` (``weight_ih_l0``, ``all_weights``, ...): read-only
copies in nn.LSTM's layout, equal to the nn.LSTM the model was converted from."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lstm


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


def test_writing_to_a_copy_does_not_change_the_model() -> None:
    model = lstm.LSTM(3, 4)
    before = copy.deepcopy(model.state_dict())
    model.bias_ih_l0.data.fill_(1.0)
    nn.init.orthogonal_(model.all_weights[0][0])
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not model.weight_ih_l0.requires_grad


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
