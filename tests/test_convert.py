"""Exact conversion to and from torch.nn.LSTM, table-driven over every option combination."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from builders import DOUBLE, projection
from lstm import LSTM
from lstm.cells.lstm import _permute_gates

BATCH, SEQ_LEN, INPUT, HIDDEN = 4, 6, 3, 5
LENGTHS = torch.tensor([6, 2, 5, 1])
INPUT_KINDS = ["full", "lengths", "packed", "unbatched"]

CASES = list(itertools.product([1, 2, 3], [False, True], [True, False], INPUT_KINDS, [True, False]))


def _our_grad_as_torch(model: LSTM, torch_name: str) -> torch.Tensor:
    """The gradient of our parameter that corresponds to nn.LSTM's ``torch_name``."""
    kind, which, suffix = torch_name.split("_", 2)  # weight, ih, l1_reverse
    layer = int(suffix.split("_")[0][1:])
    direction = 1 if suffix.endswith("reverse") else 0
    part = model.cell_parts(layer, direction)["i2h" if which == "ih" else "h2h"]
    grad = getattr(part, kind).grad
    return _permute_gates(grad, model.hidden_size)


@pytest.mark.parametrize("engine", ["auto", "reference"])
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "batch_first", "kind", "bias"),
    CASES,
    ids=[
        f"L{c[0]}-{'bi' if c[1] else 'uni'}-{'bf' if c[2] else 'tf'}-{c[3]}"
        f"-{'bias' if c[4] else 'nobias'}"
        for c in CASES
    ],
)
def test_from_torch_matches_torch(
    num_layers: int, bidirectional: bool, batch_first: bool, kind: str, bias: bool, engine: str
) -> None:
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
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    probes = [torch.randn_like(t) for t in theirs]
    projection(probes, ours).backward()
    projection(probes, theirs).backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=0, atol=1e-10)
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(
            _our_grad_as_torch(model, name), parameter.grad, rtol=0, atol=1e-10
        )


def _torch_with_lengths(
    module: nn.Module, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor], batch_first: bool
):
    """nn.LSTM has no lengths argument: pack, run, pad back to the full length."""
    packed = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    out, state = module(packed, hidden)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=SEQ_LEN)
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


def test_gate_permutation_is_an_involution() -> None:
    tensor = torch.arange(4 * 3 * 2).reshape(12, 2)
    assert torch.equal(_permute_gates(_permute_gates(tensor, 3), 3), tensor)
    assert torch.equal(_permute_gates(tensor, 3)[:3], tensor[3:6])  # our f is torch's block 1


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
