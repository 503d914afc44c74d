"""One call of the kernel engine, made cheap without changing what it computes.

At a small model the Python around ``torch.lstm`` costs as much as the kernel, so the kernel
call takes shortcuts (benchmarks/tiny_overhead.py measures them): the gate permutation is
one ``index_select`` per weight, all of them one autograd node; parameters are read without
``nn.Module``'s look-ups or generators; the initial zeros are made for every cell at once,
and the kernel takes and gives stacked states as they are (``lstm.state.StackedCells``).
Each shortcut is checked here against the plain computation, including where it must step
aside.

Nothing is cached between calls: the permuted weights are made anew by every call, since
weights may change without autograd's version counter noticing (``.data`` writes, fused
optimizers), and a no-grad call must read them as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstm.state
from builders import DOUBLE, close, gradients
from lstm import LSTM
from lstm.cells.lstm import _GATE_INDEX, _permute_all, _permute_gates
from lstm.checks import first_parameter
from lstm.parameters import part_tensor
from lstm.state import StackedCells, stacked_cells


def _sliced(tensor: Tensor, size: int) -> Tensor:
    """The gate permutation as slices and a cat: blocks f, i, o, g <-> i, f, g, o."""
    f, i, o, g = tensor.split(size)
    return torch.cat([i, f, g, o])


# ---------------------------------------------------------------------- the permutation
def test_the_permutation_is_the_block_swap_forward_and_backward() -> None:
    size = 3
    tensors = [
        torch.randn(4 * size, 2, dtype=DOUBLE, requires_grad=True),
        torch.randn(4 * size, dtype=DOUBLE, requires_grad=True),
    ]
    got = _permute_all(tensors, size)
    want = [_sliced(tensor, size) for tensor in tensors]
    close(got, want, atol=0)
    close(gradients(got, tensors), gradients(want, tensors), atol=0)
    assert torch.autograd.gradgradcheck(lambda *t: tuple(_permute_all(list(t), size)), tensors)
    with torch.no_grad():
        close(_permute_all(tensors, size), want, atol=0)
    close(_permute_gates(tensors[0], size), want[0], atol=0)
    _permute_all(tensors, size)[1].sum().backward()  # no gradient reaches the first output
    assert tensors[0].grad is None
    close(tensors[1].grad, torch.ones(4 * size, dtype=DOUBLE), atol=0)


@pytest.mark.parametrize("grad", [False, True])
def test_each_tensor_is_permuted_with_an_index_on_its_own_device(grad: bool) -> None:
    # A CPU tensor indexed by a meta index does not raise: it reads memory never written.
    on_meta = torch.empty(8, 2, device="meta", requires_grad=grad)
    on_cpu = torch.randn(8, 2, requires_grad=grad)
    permuted = _permute_all([on_meta, on_cpu], 2)
    assert permuted[0].device.type == "meta"
    close(permuted[1], _sliced(on_cpu, 2), atol=0)


def test_the_permutation_of_every_weight_is_one_autograd_node() -> None:
    model = LSTM(2, 3, num_layers=2, bidirectional=True)
    out, _ = model(torch.randn(2, 4, 2))
    nodes: dict[int, Any] = {}
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in nodes:
            nodes[id(node)] = node
            stack += [child for child, _ in node.next_functions]
    seen = [type(node).__name__ for node in nodes.values()]
    assert seen.count("_GatePermutationBackward") == 1
    assert not [name for name in seen if name.startswith(("IndexSelect", "Split"))]  # per tensor


def test_a_frozen_weight_gets_no_gradient_and_the_others_theirs() -> None:
    model = LSTM(2, 3, dtype=DOUBLE)
    reference = LSTM(2, 3, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    for module in (model, reference):
        module.i2h.weight.requires_grad_(False)
        module(torch.ones(2, 4, 2, dtype=DOUBLE))[0].sum().backward()
    assert model.i2h.weight.grad is None
    close(
        [p.grad for p in model.parameters() if p.requires_grad],
        [p.grad for p in reference.parameters() if p.requires_grad],
        atol=1e-12,
    )


def test_the_row_index_made_in_inference_mode_serves_a_backward() -> None:
    _GATE_INDEX.clear()  # the index is made on first use: here, in inference mode
    model = LSTM(2, 7)
    x = torch.randn(2, 3, 2)
    with torch.inference_mode():
        inferred, _ = model(x)
    assert not _GATE_INDEX[7, torch.device("cpu")].is_inference()
    out, _ = model(x.requires_grad_())
    out.sum().backward()  # index_select saves its index for backward
    torch.testing.assert_close(out.detach(), inferred)


def test_torch_func_grad_differentiates_the_kernel() -> None:
    model = LSTM(2, 3, num_layers=2, dtype=DOUBLE)
    x = torch.randn(2, 4, 2, dtype=DOUBLE)
    params = dict(model.named_parameters())

    def loss(values: dict[str, Tensor]) -> Tensor:
        out: Tensor = torch.func.functional_call(model, values, (x,))[0]
        return out.pow(2).sum()

    got = torch.func.grad(loss)(params)
    want = torch.autograd.grad(loss(params), list(params.values()))
    close(list(got.values()), list(want), atol=1e-12)


# ---------------------------------------------------------------------- no stale weights
def _sgd_fused(model: LSTM) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, fused=True)
    with torch.enable_grad():
        model(torch.randn(2, 3, 2))[0].sum().backward()
    optimizer.step()  # fused optimizers write without bumping the version counter


def _swap(model: LSTM) -> None:
    model.h2h.weight = nn.Parameter(torch.randn_like(model.h2h.weight))


CHANGES: dict[str, Callable[[LSTM], Any]] = {
    "in place": lambda model: model.h2h.weight.mul_(2),
    "through .data": lambda model: model.h2h.weight.data.mul_(2),
    "fused optimizer": _sgd_fused,
    "load_state_dict": lambda model: model.load_state_dict(LSTM(2, 3).state_dict()),
    "new parameter": _swap,
    "new module": lambda model: setattr(model, "i2h", nn.Linear(2, 12)),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_no_grad_call_reads_the_weights_as_they_are(change: str) -> None:
    model = LSTM(2, 3)
    x = torch.randn(2, 3, 2)
    with torch.no_grad():
        before, _ = model(x)
        CHANGES[change](model)
        after, _ = model(x)
        want, _ = model.to_torch()(x)
    torch.testing.assert_close(after, want)
    assert not torch.allclose(after, before)


# ---------------------------------------------------------------------- stacked states
def test_stacked_cells_are_a_sequence_of_views_that_knows_its_stacks() -> None:
    hidden, state = torch.randn(3, 2, 4), torch.randn(3, 2, 5)
    cells = StackedCells(hidden, state)
    assert isinstance(cells, Sequence)
    assert len(cells) == 3
    for index, (h, c) in enumerate(cells):
        assert torch.equal(h, hidden[index])
        assert torch.equal(c, state[index])
        assert h.untyped_storage().data_ptr() == hidden.untyped_storage().data_ptr()  # views
    assert [len(pair) for pair in cells[1:]] == [2, 2]
    stacks = stacked_cells(cells)
    assert stacks is not None
    assert stacks[0] is hidden
    assert stacks[1] is state


def test_stacked_cells_cannot_change_and_a_list_of_them_is_stacked_anew() -> None:
    cells = StackedCells(torch.randn(3, 2, 4), torch.randn(3, 2, 5))
    with pytest.raises(TypeError):
        cells[0] = (torch.zeros(2, 4), torch.zeros(2, 5))  # type: ignore[index]
    assert not hasattr(cells, "append")
    copied = list(cells)
    copied.reverse()
    assert stacked_cells(copied) is None
    assert stacked_cells(list(cells)) is None
    with pytest.raises(lstm.ShapeError, match=r"^StackedCells: expected hidden and state with as"):
        StackedCells(torch.randn(3, 2, 4), torch.randn(2, 2, 5))


@pytest.mark.parametrize("layout", ["stacked", "per cell", "unbatched"])
def test_given_states_reach_the_kernel_with_their_gradients(layout: str) -> None:
    layers = 1 if layout == "per cell" else 2
    model = LSTM(3, 4, num_layers=layers, dtype=DOUBLE)
    reference = LSTM(3, 4, num_layers=layers, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    batch = () if layout == "unbatched" else (2,)
    lead = () if layout == "per cell" else (layers,)
    x = torch.randn(*batch, 5, 3, dtype=DOUBLE)
    results = []
    for module in (model, reference):
        given = [torch.randn(*lead, *batch, 4, dtype=DOUBLE, generator=_seed()) for _ in "hc"]
        given = [tensor.requires_grad_() for tensor in given]
        out, (hidden, state) = module(x, tuple(given))
        results.append(([out, hidden, state], gradients([out, hidden, state], given)))
    assert model.engine_for(x, hidden=tuple(given)).name == "kernel"
    close(results[0], results[1], atol=1e-12)


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_final_states_are_the_stacked_kernel_states() -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    reference = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    got, want = model(x), reference(x)
    close(got, want, atol=1e-12)
    assert got[1][0].shape == (4, 2, 4)
    assert got[1][1].shape == (4, 2, 4)


# ---------------------------------------------------------------------- initial zeros
class _Ones(LSTM):
    def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.new_ones(x.shape[0], self.hidden_size), x.new_ones(x.shape[0], self.hidden_size)


def _ones(module: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    return x.new_ones(x.shape[0], 4), x.new_ones(x.shape[0], 4)


@pytest.mark.parametrize("where", ["subclass", "instance", "instance, old name", "class"])
def test_an_initial_state_of_ones_is_used_wherever_it_is_defined(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Patched(LSTM):
        pass

    model: LSTM = _Ones(3, 4, num_layers=2) if where == "subclass" else Patched(3, 4, num_layers=2)
    if where == "instance":
        model.init_hidden = lambda x: _ones(model, x)  # type: ignore[method-assign]
    elif where == "instance, old name":
        model.initHidden = lambda x: _ones(model, x)  # type: ignore[method-assign]
    elif where == "class":
        monkeypatch.setattr(Patched, "init_hidden", _ones)
    x = torch.randn(2, 5, 3)
    ones = torch.ones(2, 2, 4)
    assert model.engine_for(x).name == "kernel"
    close(model(x), model(x, (ones, ones)), atol=0)
    assert not torch.allclose(model(x)[0], model(x, (0 * ones, 0 * ones))[0])


def test_the_default_initial_state_is_zeros_of_every_cell() -> None:
    model = LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=DOUBLE)
    x = torch.randn(5, 6, 3, dtype=DOUBLE)
    cells = lstm.state.initial_states(model, x, None, False)
    assert len(cells) == 4
    assert stacked_cells(cells) is not None
    for hidden, state in cells:
        assert torch.equal(hidden, torch.zeros(5, 2, dtype=DOUBLE))
        assert torch.equal(state, torch.zeros(5, 4, dtype=DOUBLE))


# ---------------------------------------------------------------------- look-ups
def test_first_parameter_is_the_first_of_parameters() -> None:
    empty = nn.Module()
    holder = nn.Module()
    holder.register_parameter("nothing", None)
    holder.add_module("none", None)
    holder.add_module("empty", nn.Sequential(nn.ReLU()))
    holder.add_module("linear", nn.Linear(2, 3))
    modules = [LSTM(3, 4), LSTM(3, 4, num_layers=2), empty, holder, nn.Sequential(holder)]
    for module in modules:
        assert first_parameter(module) is next(module.parameters(), None)


def test_part_tensor_reads_what_getattr_reads() -> None:
    linear = nn.Linear(2, 3)
    without_bias = nn.Linear(2, 3, bias=False)
    shadowed = nn.Linear(2, 3)
    del shadowed.weight
    shadowed.weight = torch.ones(3, 2)  # a plain attribute now
    for part in (linear, without_bias, shadowed):
        for name in ("weight", "bias"):
            assert part_tensor(part, name) is getattr(part, name)
    with pytest.raises(AttributeError):
        part_tensor(nn.ReLU(), "weight")
