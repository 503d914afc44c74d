"""Generated good input: properties that hold for any valid shapes and options.

Hypothesis draws a cell from ``lstm.CELLS`` and its configuration (layers 1-2, directions,
``batch_first``, bias, lanes, sizes, lengths, a given initial state); the tensors come from
``torch.manual_seed`` of a drawn seed. Properties:

* every engine (the default one, ``"reference"`` and ``"hoisted"``) gives the same outputs,
  final states and gradients, to 1e-10 in float64, and the LSTM equals the independent
  sequence-by-sequence reference of ``tests/reference.py``;
* ``batch_first=False`` is the transpose of ``batch_first=True`` (bitwise), and each sequence
  run alone, unbatched, equals its row of the batched run with lengths (1e-12);
* in training mode, with dropout, recurrent dropout and zoneout, the same seed gives bitwise
  the same outputs, states and gradients, and the generator is drawn from exactly when
  something is random (the lane choices of the stochastic Array-LSTMs are the likeliest lane
  unless ``sample_lanes=True``, so they draw nothing).

The "ci" Hypothesis profile (50 cases per test, fixed seed) keeps this quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from builders import (
    DOUBLE,
    NAMES,
    PER_STEP_REGULARISERS_REFUSED,
    build,
    close,
    lstm_weights,
    parts,
    projection,
)
from conftest import counted
from lstm import Recurrent
from reference import lstm_reference


@dataclass(frozen=True)
class Config:
    """One valid configuration; ``lengths`` is None or one length in 1..seq_len per sequence."""

    cell: str
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    lanes: int
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    lengths: tuple[int, ...] | None
    given_state: bool
    seed: int

    def build(self, **options: Any) -> Recurrent:
        """The configured model, in eval mode; ``options`` override ``batch_first``, dtype."""
        options.setdefault("batch_first", self.batch_first)
        return build(
            self.cell,
            self.input_size,
            self.hidden_size,
            k=self.lanes,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            bias=self.bias,
            **options,
        )

    def input(self, dtype: torch.dtype = DOUBLE) -> Tensor:
        """Batch-first input (batch, seq_len, input_size)."""
        return torch.randn(self.batch, self.seq_len, self.input_size, dtype=dtype)

    def length_tensor(self) -> Tensor | None:
        return None if self.lengths is None else torch.tensor(self.lengths)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    batch, seq_len = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    with_lengths = draw(st.booleans())
    lengths = st.lists(st.integers(1, seq_len), min_size=batch, max_size=batch).map(tuple)
    return Config(
        cell=draw(st.sampled_from(NAMES)),
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        lanes=draw(st.integers(1, 3)),
        batch=batch,
        seq_len=seq_len,
        input_size=draw(st.integers(1, 4)),
        hidden_size=draw(st.integers(1, 4)),
        lengths=draw(lengths) if with_lengths else None,
        given_state=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def to_layout(x: Tensor, batch_first: bool) -> Tensor:
    return x if batch_first else x.transpose(0, 1)


# ------------------------------------------------------------------ engines


def run_engine(
    model: Recurrent, engine: str, x: Tensor, initial: Any, config: Config
) -> tuple[Tensor, ...]:
    """Outputs, final states, and the gradients of a fixed projection of them."""
    model.engine = engine
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out, (hidden, state) = model(to_layout(x, config.batch_first), initial, config.length_tensor())
    results = (out, hidden, *parts(state))
    generator = torch.Generator().manual_seed(config.seed)
    probes = [torch.randn(t.shape, dtype=t.dtype, generator=generator) for t in results]
    projection(probes, results).backward()
    grads = [x.grad] + [parameter.grad for parameter in model.parameters()]
    return tuple(t.detach() for t in results) + tuple(g for g in grads if g is not None)


def check_engines(config: Config) -> None:
    torch.manual_seed(config.seed)
    model = config.build().eval()  # eval: no dropout (lane choices are argmax anyway)
    x = config.input()
    initial = None
    if config.given_state:  # a state the cell can reach: the final state of another input
        with torch.no_grad():
            _, initial = model(to_layout(config.input(), config.batch_first))
    want = run_engine(model, "reference", x, initial, config)
    for engine in ("auto", "hoisted"):
        got = run_engine(model, engine, x, initial, config)
        assert len(got) == len(want)
        close(got, want, atol=1e-10)
    if config.cell == "lstm":  # and the independent per-sequence reference
        h0, c0 = initial if initial is not None else (None, None)
        with torch.no_grad():
            reference = lstm_reference(
                x,
                lstm_weights(model),
                config.num_layers,
                config.bidirectional,
                list(config.lengths) if config.lengths is not None else None,
                h0,
                c0,
            )
        out = to_layout(want[0], config.batch_first)  # back to batch-first
        close((out, want[1], want[2]), reference, atol=1e-10)


@given(config=configs())
@counted
def test_every_engine_gives_the_reference_results(config: Config) -> None:
    check_engines(config)


# ------------------------------------------------------------------ layouts


def check_layouts(config: Config) -> None:
    torch.manual_seed(config.seed)
    batch_first = config.build(batch_first=True).eval()
    sequence_first = config.build(batch_first=False).eval()
    sequence_first.load_state_dict(batch_first.state_dict())
    x, lengths = config.input(), config.length_tensor()
    with torch.no_grad():
        out, (hidden, state) = batch_first(x, lengths=lengths)
        out_t, (hidden_t, state_t) = sequence_first(x.transpose(0, 1), lengths=lengths)
        close((out_t.transpose(0, 1), hidden_t, state_t), (out, hidden, state), atol=0)
        for b, n in enumerate(config.lengths or [config.seq_len] * config.batch):
            alone, (alone_hidden, alone_state) = batch_first(x[b, :n])  # unbatched
            close(alone, out[b, :n], atol=1e-12)
            assert torch.count_nonzero(out[b, n:]) == 0  # zero past the end
            close(alone_hidden, hidden[:, b], atol=1e-12)
            close(parts(alone_state), tuple(part[:, b] for part in parts(state)), atol=1e-12)


@given(config=configs())
@counted
def test_layouts_and_unbatched_sequences_agree(config: Config) -> None:
    check_layouts(config)


# ------------------------------------------------------------------ determinism


@st.composite
def training_options(draw: st.DrawFn, num_layers: int) -> dict[str, float]:
    probability = st.sampled_from([0.0, 0.25, 0.5])
    options = {"recurrent_dropout": draw(probability), "zoneout": draw(probability)}
    if num_layers > 1:  # dropout acts between layers (and warns with one)
        options["dropout"] = draw(probability)
    return options


def run_training(model: Recurrent, config: Config) -> tuple[tuple[Tensor, ...], bool]:
    """One training step from ``config.seed``: its results and gradients, and whether the
    step drew from the global generator (the input is drawn before it)."""
    torch.manual_seed(config.seed)
    model.zero_grad(set_to_none=True)
    x = config.input(torch.float32).requires_grad_()
    generator_state = torch.get_rng_state()
    out, (hidden, state) = model(to_layout(x, config.batch_first), lengths=config.length_tensor())
    results = (out, hidden, *parts(state))
    projection([torch.ones_like(t) for t in results], results).backward()
    drew = not torch.equal(generator_state, torch.get_rng_state())
    grads = [x.grad] + [parameter.grad for parameter in model.parameters()]
    tensors = tuple(t.detach() for t in results) + tuple(g for g in grads if g is not None)
    return tensors, drew


def check_determinism(config: Config, options: dict[str, float]) -> None:
    torch.manual_seed(config.seed)
    model = config.build(dtype=torch.float32, **options).train()
    first, drew = run_training(model, config)
    second, _ = run_training(model, config)
    assert len(first) == len(second)
    for got, want in zip(second, first, strict=True):
        assert torch.equal(got, want)  # bitwise
    random = any(p > 0 for p in options.values())  # lane choices are argmax by default
    assert drew == random, f"drew from the generator: {drew}; options {options}"


@given(config=configs(), data=st.data())
@counted
def test_same_seed_same_training_step(config: Config, data: st.DataObject) -> None:
    options = data.draw(training_options(config.num_layers), label="options")
    if config.cell in PER_STEP_REGULARISERS_REFUSED:
        options = {name: p for name, p in options.items() if name == "dropout"}
    check_determinism(config, options)
