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

BATCH, SEQ_LEN, INPUT, HIDDEN = 4, 6, 3, 5
LENGTHS = torch.tensor([6, 2, 5, 1])
TORCH_BLOCK = [1, 0, 3, 2]
"""Our gate blocks are f, i, o, g; nn.LSTM's are i, f, g, o: our block j is torch's
block TORCH_BLOCK[j] (from the two documented layouts, not from the package)."""

# Each engine runs its own loop over layers, directions and ragged lengths: those are crossed
# in full with the engine (``ragged``: a lengths tensor or a PackedSequence, else a full batch
# or an unbatched sequence). The other axes are normalised before any engine runs, so every
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
        kind=["full", "unbatched", "lengths", "packed"],
        batch_first=[True, False],
        bias=[True, False],
    )
    if case["ragged"] == (case["kind"] in ("lengths", "packed"))
]
MATRIX = pairwise(FULL_MATRIX, crossed=["engine", "num_layers", "bidirectional", "ragged"])


def test_the_conversion_matrix_meets_every_pair() -> None:
    assert len(FULL_MATRIX) == 192  # the matrix this file once ran in full
    assert unmet_pairs(MATRIX, FULL_MATRIX) == set()
    assert len(MATRIX) == 24  # 2 engines x 3 layer counts x 2 directions x ragged or not


def as_torch_layout(tensor: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """One of our i2h/h2h weights or biases with its gate blocks in nn.LSTM's order."""
    blocks = tensor.reshape(4, hidden_size, *tensor.shape[1:])
    order = [TORCH_BLOCK.index(block) for block in range(4)]  # torch block -> our block
    return blocks[order].reshape(tensor.shape)


def our_parameter(model: LSTM, torch_name: str) -> torch.Tensor:
    """Our parameter that corresponds to nn.LSTM's ``torch_name`` (``weight_ih_l1_reverse``)."""
    kind, which, suffix = torch_name.split("_", 2)  # weight, ih, l1_reverse
    layer = int(suffix.split("_")[0][1:])
    direction = 1 if suffix.endswith("reverse") else 0
    return getattr(model.cell_parts(layer, direction)["i2h" if which == "ih" else "h2h"], kind)


@pytest.mark.parametrize("case", MATRIX, ids=case_id)
def test_from_torch_matches_torch(case: dict[str, Any]) -> None:
    engine, num_layers, bidirectional, _, kind, batch_first, bias = case.values()
    reference = nn.LSTM(
        INPUT,
        HIDDEN,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=DOUBLE,
    )
    model = LSTM.from_torch(reference)
    model.engine = engine
    cells = num_layers * (2 if bidirectional else 1)
    data = torch.randn(BATCH, SEQ_LEN, INPUT, dtype=DOUBLE)
    hidden = (
        torch.randn(cells, BATCH, HIDDEN, dtype=DOUBLE),
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
def test_to_torch_round_trip(num_layers: int, bidirectional: bool, batch_first: bool) -> None:
    model = LSTM(
        INPUT,
        HIDDEN,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=DOUBLE,
    )
    converted = model.to_torch()
    assert isinstance(converted, nn.LSTM)
    assert (converted.num_layers, converted.bidirectional, converted.batch_first) == (
        num_layers,
        bidirectional,
        batch_first,
    )
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
    model = LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, dtype=DOUBLE)
    converted = model.to_torch()
    for name, theirs in converted.named_parameters():
        ours = our_parameter(model, name)
        for block in range(4):  # f, i, o, g
            want = ours[block * HIDDEN : (block + 1) * HIDDEN]
            at = TORCH_BLOCK[block] * HIDDEN
            assert torch.equal(theirs[at : at + HIDDEN], want), (name, block)


def test_from_torch_rejects_projections_and_other_modules() -> None:
    with pytest.raises(ValueError, match=r"expected proj_size=0.*got proj_size=2"):
        LSTM.from_torch(nn.LSTM(3, 4, proj_size=2))
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
