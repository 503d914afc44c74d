"""Models written for ``torch.nn.LSTM`` (``tests/clients/``), run as written and with their one
``from torch.nn import LSTM`` changed to ``from lstm.nn import LSTM``: they initialise, train,
save and reload as they do with torch, with nn.LSTM's outputs and gradients (to 1e-6 in
float32 and 1e-10 in float64; both run torch's kernel on the same tensors, so in practice
bit for bit).
"""

from __future__ import annotations

import itertools
import types
from pathlib import Path

import pytest
import torch
from torch import nn

CLIENTS = Path(__file__).parent / "clients"
TORCH_IMPORT = "from torch.nn import LSTM\n"
OUR_IMPORT = "from lstm.nn import LSTM\n"
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-10}


def load_client(name: str, ours: bool) -> types.ModuleType:
    """``tests/clients/<name>.py`` as a fresh module: as written, or with the import changed."""
    path = CLIENTS / f"{name}.py"
    source = path.read_text()
    assert source.count(TORCH_IMPORT) == 1, "the client imports torch.nn's LSTM once"
    if ours:
        source = source.replace(TORCH_IMPORT, OUR_IMPORT)
        assert (
            sum(
                a != b
                for a, b in zip(source.splitlines(), path.read_text().splitlines(), strict=True)
            )
            == 1
        )
    module = types.ModuleType(f"clients.{name}.{'lstm' if ours else 'torch'}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


TORCH_CLIENT, OUR_CLIENT = load_client("log_model", False), load_client("log_model", True)

CASES = [
    pytest.param(*case, id="L{}-bi{:d}-p{}-packed{:d}-{}".format(*case[:4], str(case[4])[6:]))
    for case in itertools.product(
        [1, 2], [False, True], [0, 2], [False, True], [torch.float32, torch.float64]
    )
]


def test_the_changed_client_uses_lstm_nn() -> None:
    built = OUR_CLIENT.LogKeyModel(1, 8, 2, 5)
    assert type(built.lstm).__module__ == "lstm.cells.torch_lstm"
    assert type(TORCH_CLIENT.LogKeyModel(1, 8, 2, 5).lstm) is nn.LSTM


@pytest.mark.parametrize(("layers", "bidirectional", "proj_size", "packed", "dtype"), CASES)
def test_a_log_key_model_trains_saves_and_reloads_as_with_torch(
    layers: int,
    bidirectional: bool,
    proj_size: int,
    packed: bool,
    dtype: torch.dtype,
    tmp_path: Path,
) -> None:
    sizes = (3, 8, layers, 5)  # input, hidden, layers, keys
    models = []
    for client in (TORCH_CLIENT, OUR_CLIENT):
        torch.manual_seed(0)  # the same draws: construction and init through the names
        models.append(
            client.LogKeyModel(*sizes, bidirectional=bidirectional, proj_size=proj_size).to(dtype)
        )
    theirs, ours = models
    for (name, mine), (its_name, its) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert name == its_name
        assert torch.equal(mine, its), name
    atol = TOLERANCE[dtype]
    generator = torch.Generator().manual_seed(1)
    optimisers = [torch.optim.SGD(model.parameters(), lr=0.5) for model in models]
    for _ in range(3):
        keys = torch.randn(10, 4, 3, generator=generator).to(dtype)  # (seq_len, batch, input)
        targets = torch.randint(0, 5, (4,), generator=generator)
        lengths = [10, 7, 3, 9] if packed else None
        scores = []
        for model, optimiser in zip(models, optimisers, strict=True):
            optimiser.zero_grad()
            score = model(keys, lengths)
            nn.functional.cross_entropy(score, targets).backward()
            scores.append(score)
        torch.testing.assert_close(scores[1], scores[0], rtol=0, atol=atol)
        for mine, its in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(mine.grad, its.grad, rtol=0, atol=atol)
        for optimiser in optimisers:
            optimiser.step()
    keys = torch.randn(10, 4, 3, generator=generator).to(dtype)
    TORCH_CLIENT.save(theirs, tmp_path / "torch.pt")
    OUR_CLIENT.save(ours, tmp_path / "lstm.pt")
    reloaded_ours = OUR_CLIENT.load(tmp_path / "torch.pt")  # saved by nn.LSTM, read by keys
    reloaded_theirs = TORCH_CLIENT.load(tmp_path / "lstm.pt")
    expected = theirs(keys)
    torch.testing.assert_close(reloaded_ours(keys), expected, rtol=0, atol=atol)
    torch.testing.assert_close(reloaded_theirs(keys), expected, rtol=0, atol=atol)


def test_a_word_language_model_trains_carrying_its_state_as_with_torch(tmp_path: Path) -> None:
    models = []
    for ours in (False, True):
        client = load_client("word_model", ours)
        torch.manual_seed(0)
        models.append((client, client.WordModel(20, 6, 8, 2)))
    (torch_client, theirs), (our_client, ours) = models
    for mine, its in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, its)
    generator = torch.Generator().manual_seed(2)
    hidden = [ours.init_hidden(3), theirs.init_hidden(3)]
    for _ in range(4):
        words = torch.randint(0, 20, (5, 3), generator=generator)  # (seq_len, batch)
        targets = torch.randint(0, 20, (5, 3), generator=generator)
        results = []
        for index, (model, client) in enumerate(((ours, our_client), (theirs, torch_client))):
            model.zero_grad()
            hidden[index] = client.repackage(hidden[index])
            output, hidden[index] = model(words, hidden[index])
            nn.functional.cross_entropy(output.view(-1, 20), targets.view(-1)).backward()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(parameter.grad, alpha=-1.0)
            results.append((output, *hidden[index]))
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)
    torch.save(theirs.state_dict(), tmp_path / "model.pt")
    loaded = our_client.WordModel(20, 6, 8, 2)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    loaded.rnn.flatten_parameters()
    words = torch.randint(0, 20, (5, 3), generator=generator)
    state = theirs.init_hidden(3)
    torch.testing.assert_close(loaded(words, state), theirs(words, state), rtol=0, atol=1e-6)
