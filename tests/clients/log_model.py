"""A log-key anomaly model written for ``torch.nn.LSTM``, the way its users write one.

DeepLog-style (Du et al. 2017): windows of log keys, sequence first, an LSTM and a linear
layer over its last hidden state. It initialises through nn.LSTM's parameter names, saves a
state dict and rebuilds itself from one by reading the shapes under those names. Nothing here
knows of this package: ``tests/test_clients.py`` runs this file as it is and with its one
``LSTM`` import changed to ``lstm.nn``'s.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import LSTM
from torch.nn.utils.rnn import pack_padded_sequence


class LogKeyModel(nn.Module):
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        num_keys: int,
        bidirectional: bool = False,
        proj_size: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.lstm = LSTM(
            input_size, hidden_size, num_layers, bidirectional=bidirectional, proj_size=proj_size
        )
        self.fc = nn.Linear(self.directions * (proj_size or hidden_size), num_keys)
        self.init_weights()

    def init_weights(self) -> None:
        for name, parameter in self.lstm.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(parameter)
            elif "weight_ih" in name or "weight_hr" in name:
                nn.init.xavier_uniform_(parameter)
            elif "bias" in name:
                nn.init.zeros_(parameter)
                parameter.data[self.hidden_size : 2 * self.hidden_size].fill_(1.0)  # forget

    def forward(self, keys: Tensor, lengths: list[int] | None = None) -> Tensor:
        """keys (seq_len, batch, input_size) -> scores (batch, num_keys)."""
        inputs = keys if lengths is None else pack_padded_sequence(keys, lengths, False, False)
        _, (hidden, _) = self.lstm(inputs)
        last = hidden[-self.directions :]  # the last layer, each direction
        return self.fc(torch.cat(list(last), dim=-1))


def save(model: LogKeyModel, path: Path) -> None:
    torch.save(model.state_dict(), path)


def load(path: Path) -> LogKeyModel:
    """Rebuild the model from a saved state dict alone, reading sizes from its keys."""
    state = torch.load(path)
    input_size = state["lstm.weight_ih_l0"].shape[1]
    hidden_size = state["lstm.weight_ih_l0"].shape[0] // 4
    layers = len([key for key in state if key.startswith("lstm.weight_ih_l")]) // (
        2 if "lstm.weight_ih_l0_reverse" in state else 1
    )
    proj_size = state["lstm.weight_hr_l0"].shape[0] if "lstm.weight_hr_l0" in state else 0
    model = LogKeyModel(
        input_size,
        hidden_size,
        layers,
        state["fc.weight"].shape[0],
        bidirectional="lstm.weight_ih_l0_reverse" in state,
        proj_size=proj_size,
    ).to(state["fc.weight"].dtype)
    model.load_state_dict(state)
    return model
