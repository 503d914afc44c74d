"""Test-only cells that stress the driver's contract where the LSTM does not.

``LaneCell`` carries a state of shape (k, batch, hidden) like an Array-LSTM; ``TupleStateCell``
carries a tuple of two states. The generic tests run them next to every registered cell, so
the driver's opaque-state handling (stacking, splitting, masking) is tested before any such
cell is registered. ``ReferenceLSTM`` and ``HoistedLSTM`` hold the LSTM on its other engines.
``CoupledGateLSTM`` is a user's cell: it overrides ``forward_cell`` of ``lstm.LSTM`` only.
``TorchFaceLSTM`` and ``TorchFaceStepLSTM`` are ``lstm.nn.LSTM`` on its kernel and a user's
step on it, batch-first like every other cell here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import lstm
from lstm import LSTM, Recurrent, lstm_pointwise
from lstm.driver import CellPart


class LaneCell(LSTM):
    """k LSTM lanes per unit; hidden = sum of the lanes' outputs. State (k, batch, hidden)."""

    def __init__(self, input_size: int, hidden_size: int, k: int = 3, **options: object) -> None:
        self.k = k  # build_cell reads it, so it is set before super().__init__
        super().__init__(input_size, hidden_size, **options)  # type: ignore[arg-type]

    def build_cell(
        self, input_size: int, hidden_size: int, *, device=None, dtype=None
    ) -> dict[str, CellPart]:  # type: ignore[no-untyped-def]
        width = 4 * hidden_size * self.k
        return {
            "i2h": nn.Linear(input_size, width, device=device, dtype=dtype),
            "h2h": nn.Linear(hidden_size, width, device=device, dtype=dtype),
        }

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = (
            (self.i2h(x) + self.h2h(hidden)).view(x.shape[0], self.k, -1).transpose(0, 1)
        )  # (k, B, 4H)
        lane_hidden, state = lstm_pointwise(gates, state)  # (k, B, H) each
        return lane_hidden.sum(0), state

    def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.new_zeros(x.shape[0], self.hidden_size), x.new_zeros(
            self.k, x.shape[0], self.hidden_size
        )


class TupleStateCell(Recurrent):
    """A cell whose state is a pair (c, n): a gated running sum and its normaliser."""

    def build_cell(
        self, input_size: int, hidden_size: int, *, device=None, dtype=None
    ) -> dict[str, CellPart]:  # type: ignore[no-untyped-def]
        return {
            "i2h": nn.Linear(
                input_size, 4 * hidden_size, bias=self.bias, device=device, dtype=dtype
            ),
            "h2h": nn.Linear(
                hidden_size, 4 * hidden_size, bias=self.bias, device=device, dtype=dtype
            ),
        }

    def forward_cell(
        self, x: Tensor, hidden: Tensor, state: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        total, norm = state
        f, i, o, g = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        f, i, o = torch.sigmoid(f), torch.sigmoid(i), torch.sigmoid(o)
        total = f * total + i * torch.tanh(g)
        norm = f * norm + i
        return o * total / (norm + 1.0), (total, norm)

    def init_hidden(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, (zeros.clone(), zeros.clone())


class ReferenceLSTM(LSTM):
    """The built-in LSTM held on the reference path, so generic tests cover every engine."""

    engine_name = "reference"

    def __init__(self, input_size: int, hidden_size: int, **options: object) -> None:
        super().__init__(input_size, hidden_size, **options)  # type: ignore[arg-type]
        self.engine = self.engine_name


class HoistedLSTM(ReferenceLSTM):
    """The built-in LSTM on the hoisted engine (input projection before the loop)."""

    engine_name = "hoisted"


class CoupledGateLSTM(LSTM):
    """A user cell that overrides ``forward_cell`` only: coupled input and forget gates.

    c' = f ⊙ c + (1 - f) ⊙ g; the input block of the gates is left unused.
    """

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        forget, _, output, candidate = (self.i2h(x) + self.h2h(hidden)).chunk(4, dim=-1)
        forget = torch.sigmoid(forget)
        state = forget * state + (1 - forget) * torch.tanh(candidate)
        return torch.sigmoid(output) * torch.tanh(state), state


class TorchFaceLSTM(lstm.nn.LSTM):
    """``lstm.nn.LSTM`` (nn.LSTM's face, on the kernel), batch-first as the generic tests are."""

    def __init__(self, input_size: int, hidden_size: int, **options: object) -> None:
        options.setdefault("batch_first", True)
        super().__init__(input_size, hidden_size, **options)  # type: ignore[arg-type]


class TorchFaceStepLSTM(TorchFaceLSTM):
    """A user's step on ``lstm.nn.LSTM``: the LSTM written out in torch's gate order i, f, g, o,
    from the plain names a cell sees; it runs on the reference engine."""

    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        gates = nn.functional.linear(x, self.weight_ih, self.bias_ih)
        gates = gates + nn.functional.linear(hidden, self.weight_hh, self.bias_hh)
        input_gate, forget, candidate, output = gates.chunk(4, dim=-1)
        state = torch.sigmoid(forget) * state + torch.sigmoid(input_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(output) * torch.tanh(state)
        if self.weight_hr is not None:
            hidden = nn.functional.linear(hidden, self.weight_hr)
        return hidden, state
