"""A word language model written for ``torch.nn.LSTM`` as pytorch/examples' word_language_model
writes it: sequence first, an encoder, dropout, the hidden state carried (detached) from batch
to batch, weights initialised through their names, ``flatten_parameters()`` after loading.
Nothing here knows of this package (see ``log_model.py``)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import LSTM


class WordModel(nn.Module):
    def __init__(self, tokens: int, width: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(tokens, width)
        self.rnn = LSTM(width, hidden_size, num_layers, dropout=0.0)
        self.decoder = nn.Linear(hidden_size, tokens)
        self.hidden_size, self.num_layers = hidden_size, num_layers
        for layer in range(num_layers):
            getattr(self.rnn, f"weight_hh_l{layer}").data.uniform_(-0.1, 0.1)
            getattr(self.rnn, f"bias_ih_l{layer}").data.zero_()

    def forward(self, words: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, Any]:
        output, hidden = self.rnn(self.encoder(words), hidden)
        return self.decoder(output), hidden

    def init_hidden(self, batch: int) -> tuple[Tensor, Tensor]:
        weight = next(self.parameters())
        return (
            weight.new_zeros(self.num_layers, batch, self.hidden_size),
            weight.new_zeros(self.num_layers, batch, self.hidden_size),
        )


def repackage(hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return hidden[0].detach(), hidden[1].detach()
