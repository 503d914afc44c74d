"""Whole-model ``torch.save``/``torch.load`` with ``weights_only=True`` (torch's default) through
``lstm.safe_globals()``, including pytorch/examples' word_language_model save-and-resume flow."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import lstm


def _load(path: Path, *extra: type) -> nn.Module:
    with torch.serialization.safe_globals([*lstm.safe_globals(), *extra]):
        model = torch.load(path)  # weights_only=True: torch's default
    assert isinstance(model, nn.Module)
    return model


def test_loading_without_the_helper_names_the_class(tmp_path: Path) -> None:
    """The failure this helper answers (torch's own message, not ours)."""
    torch.save(lstm.LSTM(3, 4), tmp_path / "model.pt")
    with pytest.raises(
        pickle.UnpicklingError, match=r"Unsupported global.*lstm\.cells\.lstm\.LSTM"
    ):
        torch.load(tmp_path / "model.pt")


@pytest.mark.parametrize("name", sorted(lstm.CELLS))
def test_every_registered_cell_loads_whole(name: str, tmp_path: Path) -> None:
    model = lstm.create(name, 3, 4, num_layers=2, bidirectional=True, dropout=0.25)
    model.eval()
    x = torch.randn(2, 5, 3)
    expected = model(x)[0]  # after a forward call: nothing cached may get in the way
    torch.save(model, tmp_path / "model.pt")
    loaded = _load(tmp_path / "model.pt")
    assert type(loaded) is type(model)
    assert repr(loaded) == repr(model)
    assert not loaded.training
    assert torch.equal(loaded(x)[0], expected)


def test_a_subclass_of_ones_own_is_added_by_the_caller(tmp_path: Path) -> None:
    torch.save(_ForgetBiasLSTM(3, 4), tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        _load(tmp_path / "model.pt")
    assert type(_load(tmp_path / "model.pt", _ForgetBiasLSTM)) is _ForgetBiasLSTM


class _ForgetBiasLSTM(lstm.LSTM):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, forget_bias=1.0)


class RNNModel(nn.Module):
    """pytorch/examples' word_language_model ``RNNModel`` (LSTM case): encoder, rnn, decoder."""

    def __init__(self, tokens: int, embedding: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(tokens, embedding)
        self.rnn = lstm.LSTM(embedding, hidden, num_layers=layers, dropout=0.2, batch_first=False)
        self.decoder = nn.Linear(hidden, tokens)
        self.nhid, self.nlayers = hidden, layers

    def forward(self, tokens: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
        embedded = self.drop(self.encoder(tokens))  # (T, B, E)
        output, hidden = self.rnn(embedded, hidden)  # (T, B, H)
        decoded = self.decoder(self.drop(output))  # (T, B, tokens)
        return nn.functional.log_softmax(decoded, dim=-1), hidden

    def init_hidden(self, batch: int) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(self.nlayers, batch, self.nhid)
        return zeros, zeros.clone()


def _train_step(model: RNNModel, tokens: Tensor, seed: int) -> Tensor:
    """One step of the example's ``train()``: forward, NLL loss, backward, clip, SGD update."""
    torch.manual_seed(seed)  # the same dropout masks in both runs
    model.train()
    model.zero_grad()
    output, _ = model(tokens[:-1], model.init_hidden(tokens.shape[1]))
    loss = nn.functional.nll_loss(output.reshape(-1, output.shape[-1]), tokens[1:].reshape(-1))
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(parameter.grad, alpha=-20.0)  # the example's lr
    return loss.detach()


def test_word_language_model_save_load_resume_is_bitwise(tmp_path: Path) -> None:
    """Train a step, ``torch.save(model)``, load it the supported way, train on: bitwise equal
    to the same two steps without the interruption."""
    torch.manual_seed(0)
    model = RNNModel(tokens=11, embedding=6, hidden=7, layers=2)
    uninterrupted = copy.deepcopy(model)
    tokens = torch.randint(0, 11, (9, 3))  # (T + 1, B)

    first = _train_step(model, tokens, seed=1)
    torch.save(model, tmp_path / "model.pt")
    resumed = _load(tmp_path / "model.pt", RNNModel, nn.Dropout, nn.Embedding)
    assert isinstance(resumed, RNNModel)
    if hasattr(resumed.rnn, "flatten_parameters"):  # as the example calls it after loading
        resumed.rnn.flatten_parameters()
    second = _train_step(resumed, tokens, seed=2)

    assert torch.equal(_train_step(uninterrupted, tokens, seed=1), first)
    assert torch.equal(_train_step(uninterrupted, tokens, seed=2), second)
    for (name, value), (_, expected) in zip(
        resumed.state_dict().items(), uninterrupted.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name
