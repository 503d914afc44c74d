"""Exact conversion to and from torch.nn.LSTM (``LSTM.from_torch`` and ``LSTM.to_torch``, in
``lstm.cells.lstm``): outputs, final states and gradients equal nn.LSTM's to 1e-10 in float64.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from builders import DOUBLE, close, gradients
from lstm import LSTM
from pairwise import case_id, pairwise, product, unmet_pairs

BATCH, SEQ_LEN, INPUT, HIDDEN, PROJ = 4, 6, 3, 5, 2
LENGTHS = torch.tensor([6, 2, 5, 1])
TORCH_BLOCK = [1, 0, 3, 2]
"""Our gate blocks are f, i, o, g; nn.LSTM's are i, f, g, o: our block j is torch's
block TORCH_BLOCK[j] (from the two documented layouts, not from the package)."""

# Each engine runs its own loop over layers, directions and ragged lengths: those are crossed
# in full with the engine (``ragged``: a lengths tensor or a PackedSequence, else a full batch
# or an unbatched sequence), and so is the projection (``proj_size``), which changes what
# every loop carries (the hidden's width, what deeper layers read, the kernel's weight
# list). The other axes are normalised before any engine runs, so every
# value of each meets every value of every other axis (pairwise), not every combination:
# batch_first is a transpose of the input, an unbatched sequence a batch of one, a
# PackedSequence a padded batch with lengths, and bias=False a cell without bias terms.
FULL_MATRIX = [
    case
    for case in product(
        engine=["auto", "reference"],
        num_layers=[1, 2, 3],
        bidirectional=[False, True],
        ragged=[False, True],
        proj_size=[0, PROJ],
        kind=["full", "unbatched", "lengths", "packed"],
        batch_first=[True, False],
        bias=[True, False],
    )
    if case["ragged"] == (case["kind"] in ("lengths", "packed"))
]
MATRIX = pairwise(
    FULL_MATRIX, crossed=["engine", "num_layers", "bidirectional", "ragged", "proj_size"]
)


def test_the_conversion_matrix_meets_every_pair() -> None:
    assert len(FULL_MATRIX) == 384  # 192 without projections, which this file once ran in full
    assert unmet_pairs(MATRIX, FULL_MATRIX) == set()
    assert len(MATRIX) == 48  # 2 engines x 3 layer counts x 2 directions x ragged x proj_size


def as_torch_layout(tensor: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """One of our i2h/h2h weights or biases with its gate blocks in nn.LSTM's order; an
    h2p weight (``weight_hr``, no gate blocks) as it is."""
    if tensor.shape[0] != 4 * hidden_size:
        return tensor
    blocks = tensor.reshape(4, hidden_size, *tensor.shape[1:])
    order = [TORCH_BLOCK.index(block) for block in range(4)]  # torch block -> our block
    return blocks[order].reshape(tensor.shape)


def our_parameter(model: LSTM, torch_name: str) -> torch.Tensor:
    """Our parameter that corresponds to nn.LSTM's ``torch_name`` (``weight_ih_l1_reverse``)."""
    kind, which, suffix = torch_name.split("_", 2)  # weight, ih, l1_reverse
    layer = int(suffix.split("_")[0][1:])
    direction = 1 if suffix.endswith("reverse") else 0
    part = {"ih": "i2h", "hh": "h2h", "hr": "h2p"}[which]
    return getattr(model.cell_parts(layer, direction)[part], kind)


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_from_torch_matches_torch(case: dict[str, Any]) -> None:
    engine, num_layers, bidirectional, _, proj_size, kind, batch_first, bias = case.values()
    reference = nn.LSTM(
        INPUT,
        HIDDEN,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj_size,
        dtype=DOUBLE,
    )
    model = LSTM.from_torch(reference)
    assert model.proj_size == proj_size
    model.engine = engine
    cells = num_layers * (2 if bidirectional else 1)
    data = torch.randn(BATCH, SEQ_LEN, INPUT, dtype=DOUBLE)
    hidden = (
        torch.randn(cells, BATCH, proj_size or HIDDEN, dtype=DOUBLE),
        torch.randn(cells, BATCH, HIDDEN, dtype=DOUBLE),
    )
    if kind == "unbatched":
        data, hidden = data[0], (hidden[0][:, 0], hidden[1][:, 0])
    elif not batch_first:
        data = data.transpose(0, 1)
    x_ours = data.clone().requires_grad_()
    x_theirs = data.clone().requires_grad_()

    def run(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if kind == "lengths":
            out, (h, c) = (
                module(x, hidden, lengths=LENGTHS)
                if module is model
                else _torch_with_lengths(module, x, hidden, batch_first)
            )
        elif kind == "packed":
            packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
            out, (h, c) = module(packed, hidden)
            assert isinstance(out, PackedSequence)
            out = out.data
        else:
            out, (h, c) = module(x, hidden)
        return out, h, c

    ours, theirs = run(model, x_ours), run(reference, x_theirs)
    for got, want in zip(ours, theirs, strict=True):
        assert got.shape == want.shape
    close(ours, theirs, atol=1e-10)
    names = [name for name, _ in reference.named_parameters()]
    grads_ours = gradients(ours, [x_ours, *(our_parameter(model, name) for name in names)])
    grads_theirs = gradients(theirs, [x_theirs, *reference.parameters()])
    close(grads_ours[0], grads_theirs[0], atol=1e-10)
    for name, got, want in zip(names, grads_ours[1:], grads_theirs[1:], strict=True):
        torch.testing.assert_close(as_torch_layout(got, HIDDEN), want, rtol=0, atol=1e-10, msg=name)


def _torch_with_lengths(
    module: nn.Module, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor], batch_first: bool
):
    """nn.LSTM has no lengths argument: pack, run, pad back to the full length."""
    packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    out, state = module(packed, hidden)
    padded, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=SEQ_LEN)
    return padded, state


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("proj_size", [0, PROJ])
def test_to_torch_round_trip(
    num_layers: int, bidirectional: bool, batch_first: bool, proj_size: int
) -> None:
    model = LSTM(
        INPUT,
        HIDDEN,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        proj_size=proj_size,
        dtype=DOUBLE,
    )
    converted = model.to_torch()
    assert isinstance(converted, nn.LSTM)
    options = (converted.num_layers, converted.bidirectional, converted.batch_first)
    assert (*options, converted.proj_size) == (num_layers, bidirectional, batch_first, proj_size)
    x = torch.randn(BATCH, SEQ_LEN, INPUT, dtype=DOUBLE)
    torch.testing.assert_close(model(x), converted(x), rtol=0, atol=1e-10)
    back = LSTM.from_torch(converted)
    for (name, ours), (name_back, theirs) in zip(
        model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert name == name_back
        assert torch.equal(ours, theirs)


def test_conversion_copies_options_and_mode() -> None:
    reference = nn.LSTM(INPUT, HIDDEN, num_layers=2, dropout=0.25, dtype=torch.float32).eval()
    model = LSTM.from_torch(reference)
    assert model.dropout == 0.25
    assert model.training is False
    assert model.i2h.weight.dtype == torch.float32
    back = model.train().to_torch()
    assert back.dropout == 0.25
    assert back.training is True


def test_to_torch_puts_each_gate_block_where_torch_expects_it() -> None:
    model = LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ, dtype=DOUBLE)
    converted = model.to_torch()
    for name, theirs in converted.named_parameters():
        ours = our_parameter(model, name)
        if name.startswith("weight_hr"):  # the projection has no gate blocks: copied as it is
            assert ours.shape == (PROJ, HIDDEN)
            assert torch.equal(theirs, ours), name
            continue
        for block in range(4):  # f, i, o, g
            want = ours[block * HIDDEN : (block + 1) * HIDDEN]
            at = TORCH_BLOCK[block] * HIDDEN
            assert torch.equal(theirs[at : at + HIDDEN], want), (name, block)


def test_projected_parameters_follow_torch_names_and_shapes() -> None:
    reference = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=PROJ)
    model = LSTM.from_torch(reference)
    torch_names = [name for name, _ in reference.named_parameters()]
    assert [name for name in torch_names if name.startswith("weight_hr")] == [
        "weight_hr_l0",
        "weight_hr_l0_reverse",
        "weight_hr_l1",
        "weight_hr_l1_reverse",
    ]
    for name, theirs in reference.named_parameters():
        assert our_parameter(model, name).shape == theirs.shape, name
    assert len(list(model.parameters())) == len(torch_names)


def test_from_torch_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match=r"expected a torch.nn.LSTM, got GRU"):
        LSTM.from_torch(nn.GRU(3, 4))  # type: ignore[arg-type]


def test_conversion_refuses_cells_with_other_math() -> None:
    class Doubled(LSTM):
        def forward_cell(self, x, hidden, state):  # type: ignore[no-untyped-def]
            hidden, state = super().forward_cell(x, hidden, state)
            return 2 * hidden, state

    with pytest.raises(TypeError, match=r"Doubled which overrides forward_cell"):
        Doubled(3, 4).to_torch()
    with pytest.raises(TypeError, match=r"Doubled which overrides forward_cell"):
        Doubled.from_torch(nn.LSTM(3, 4))
