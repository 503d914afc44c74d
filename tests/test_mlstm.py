"""The mLSTM (``lstm.cells.mlstm``): the paper's equations, and its two forms that agree.

The step form (``forward_cell``, the reference engine) is checked against the paper's
equations written here without the stabiliser, in float64, one 1-D step at a time
(:func:`reference.run_reference`): the stabilised C and n are the paper's divided by
exp(m). The parallel form (``mlstm_chunkwise``, the ``parallel`` engine) is checked against
the step form over layers x directions x ragged lengths x chunk sizes, from the default and
from random states, with every gradient; fed in two calls with the state carried; and with
gradcheck. Then the numerics (10,000 steps, saturated gates, bf16 autocast), the engine
choice and the errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import lstm
from builders import DOUBLE, assert_matches_reference, close, gradients, results
from conftest import run_cli, train_args
from lstm import MLSTM
from lstm.engines import FastPath
from pairwise import case_id, product
from reference import Step, zeros_initial

HEADS, INPUT, HIDDEN = 2, 3, 6  # head size d = 3
LENGTHS = [7, 3, 1, 6]


def mlstm(hidden_size: int = HIDDEN, **options: Any) -> MLSTM:
    """An mLSTM in float64, eval mode, its forget biases lowered so every gate matters (and,
    with ``head_norm``, the norms' weights and biases drawn away from 1 and 0)."""
    options.setdefault("num_heads", HEADS)
    model = MLSTM(INPUT, hidden_size, dtype=DOUBLE, **options).eval()
    with torch.no_grad():
        for index in model.cell_indices():
            parts = model.cell_parts(*index)
            bias = parts["i2h"].bias
            bias[-model.num_heads :] = torch.linspace(-1.0, 1.0, model.num_heads)
            if "norm" in parts:
                parts["norm"].weight.uniform_(0.5, 1.5)
                parts["norm"].bias.uniform_(-0.5, 0.5)
    return model


def paper_step(model: MLSTM) -> Step:
    """The paper's mLSTM on 1-D vectors, without the stabiliser: i = exp(ĩ), f = σ(f̃)."""
    heads, size = model.num_heads, model.head_size
    width = model.hidden_size

    def step(layer: int, direction: int, x: Tensor, h: Tensor, state: Any) -> tuple[Tensor, Any]:
        memory, normaliser = state  # (heads * d * d,), (H,): the paper's C and n
        i2h = model.cell_parts(layer, direction)["i2h"]
        a = i2h.weight @ x + i2h.bias
        q, k, v = a[:width], a[width : 2 * width] / math.sqrt(size), a[2 * width : 3 * width]
        o = torch.sigmoid(a[3 * width : 4 * width])
        gate_i, gate_f = a[4 * width : 4 * width + heads], a[4 * width + heads :]
        memories, normalisers, reads = [], [], []
        for head in range(heads):
            rows = slice(head * size, (head + 1) * size)
            c = memory[head * size * size : (head + 1) * size * size].view(size, size)
            i, f = torch.exp(gate_i[head]), torch.sigmoid(gate_f[head])
            c = f * c + i * torch.outer(v[rows], k[rows])
            n = f * normaliser[rows] + i * k[rows]
            reads.append(c @ q[rows] / torch.clamp(torch.abs(n @ q[rows]), min=1.0))
            memories.append(c.reshape(-1))
            normalisers.append(n)
        return o * torch.cat(reads), (torch.cat(memories), torch.cat(normalisers))

    return step


def unstabilised(state: Any) -> tuple[Tensor, ...]:
    """(C e^m, n e^m) of the model's stabilised state; the paper's (C, n) as they are."""
    if len(state) == 2:
        return tuple(state)
    memory, normaliser, stabiliser = state
    heads = stabiliser.shape[-1]
    scale = torch.exp(stabiliser)
    memory = memory * scale.repeat_interleave(memory.shape[-1] // heads, dim=-1)
    return memory, normaliser * scale.repeat_interleave(normaliser.shape[-1] // heads, dim=-1)


@pytest.mark.parametrize("engine", ["reference", "auto"])
def test_equals_the_papers_equations(engine: str) -> None:
    torch.manual_seed(0)
    model = mlstm(num_layers=2, bidirectional=True, chunk_size=4)
    model.engine = engine
    x = torch.randn(4, 7, INPUT, dtype=DOUBLE)
    assert model.engine_for(x, torch.tensor(LENGTHS)).name == (
        "reference" if engine == "reference" else "parallel"
    )
    size = model.head_size
    initial = zeros_initial(x, HIDDEN, (HEADS * size * size,), (HIDDEN,))
    assert_matches_reference(model, x, paper_step(model), initial, LENGTHS, state_view=unstabilised)


def random_state(model: MLSTM, batch: int, generator: torch.Generator) -> tuple[Tensor, Any]:
    """Stacked (hidden, (C, n, m)) with random values; m within a few units of 0."""
    cells = model.num_layers * model.num_directions
    hidden, (memory, normaliser, stabiliser) = model.init_hidden(torch.zeros(batch, 1, 1))

    def draw(like: Tensor) -> Tensor:
        return torch.randn((cells, *like.shape), dtype=DOUBLE, generator=generator)

    return draw(hidden), (draw(memory), draw(normaliser).abs(), draw(stabiliser))


CASES = product(
    num_layers=[1, 2],
    bidirectional=[False, True],
    ragged=[False, True],
    chunk_size=[1, 3, 64],
    given_state=[False, True],
    head_norm=[False, True],
)


def run_engine(
    model: MLSTM, engine: str, x: Tensor, lengths: Tensor | None, initial: Any
) -> tuple[tuple[Tensor, ...], list[Tensor]]:
    """Outputs and final state, and the gradients of all of them with respect to the input,
    the initial state's (C, n, m) (when given) and every parameter. (The initial hidden is
    read by neither form: the gates see only the input.)"""
    model.engine = engine
    inputs = [x.clone().requires_grad_()]
    if initial is None:
        got = results(*model(inputs[0], lengths=lengths))
    else:
        inputs += [part.clone().requires_grad_() for part in initial[1]]
        got = results(*model(inputs[0], (initial[0], tuple(inputs[1:])), lengths=lengths))
    return got, gradients(got, [*inputs, *model.parameters()])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parallel_form_equals_the_step_form(case: dict[str, Any]) -> None:
    torch.manual_seed(1)
    generator = torch.Generator().manual_seed(2)
    model = mlstm(
        num_layers=case["num_layers"],
        bidirectional=case["bidirectional"],
        chunk_size=case["chunk_size"],
        head_norm=case["head_norm"],
    )
    x = torch.randn(4, 7, INPUT, dtype=DOUBLE)
    lengths = torch.tensor(LENGTHS) if case["ragged"] else None
    initial = random_state(model, 4, generator) if case["given_state"] else None
    assert_forms_agree(model, x, lengths, initial)


def assert_forms_agree(model: MLSTM, x: Tensor, lengths: Tensor | None, initial: Any) -> None:
    """The parallel engine's results and gradients equal the step form's (1e-12, 1e-10)."""
    assert model.engine_for(x, lengths).name == "parallel"
    parallel, parallel_grads = run_engine(model, "auto", x, lengths, initial)
    step, step_grads = run_engine(model, "reference", x, lengths, initial)
    close(parallel, step, atol=1e-12)
    close(parallel_grads, step_grads, atol=1e-10)


def test_a_sequence_longer_than_one_segment() -> None:
    # mlstm_chunkwise computes SEGMENT chunks at once; 37 steps in chunks of 2 are three
    # segments (16 + 16 + 5 steps), the last one padded, carried across segment ends.
    torch.manual_seed(10)
    assert lstm.cells.mlstm.SEGMENT * 2 < 37
    model = mlstm(bidirectional=True, chunk_size=2)
    x = torch.randn(3, 37, INPUT, dtype=DOUBLE)
    lengths = torch.tensor([37, 20, 9])
    assert_forms_agree(model, x, lengths, random_state(model, 3, torch.Generator().manual_seed(11)))


def test_a_sequence_fed_in_two_calls_equals_one_call() -> None:
    torch.manual_seed(3)
    model = mlstm(num_layers=2, chunk_size=4)
    x = torch.randn(3, 13, INPUT, dtype=DOUBLE, requires_grad=True)
    whole, (hidden, state) = model(x)
    first, carried = model(x[:, :6])
    second, (hidden2, state2) = model(x[:, 6:], carried)
    close(torch.cat([first, second], dim=1), whole)
    close((hidden2, *state2), (hidden, *state))
    probes = [torch.randn_like(t) for t in (whole, *state)]
    one = torch.autograd.grad(
        sum((p * t).sum() for p, t in zip(probes, (whole, *state), strict=True)), x
    )[0]
    two_out = torch.cat([first, second], dim=1)
    two = torch.autograd.grad(
        sum((p * t).sum() for p, t in zip(probes, (two_out, *state2), strict=True)), x
    )
    close(two[0], one, atol=1e-10)


def test_gradcheck_through_the_parallel_form() -> None:
    torch.manual_seed(4)
    model = mlstm(hidden_size=4, chunk_size=2, bidirectional=True)
    x = torch.randn(2, 5, INPUT, dtype=DOUBLE, requires_grad=True)
    lengths = torch.tensor([5, 3])
    assert model.engine_for(x, lengths).name == "parallel"

    def run(inputs: Tensor) -> tuple[Tensor, ...]:
        return results(*model(inputs, lengths=lengths))

    assert torch.autograd.gradcheck(run, (x,))
    assert torch.autograd.gradgradcheck(run, (x,))


def test_gradcheck_through_the_parallel_form_with_the_head_norm() -> None:
    torch.manual_seed(4)
    model = mlstm(hidden_size=4, chunk_size=2, head_norm=True)
    x = torch.randn(2, 5, INPUT, dtype=DOUBLE, requires_grad=True)
    lengths = torch.tensor([5, 3])
    norm = model.norm  # gradcheck perturbs its weight and bias in place, where the model reads them

    def run(inputs: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, ...]:
        return results(*model(inputs, lengths=lengths))

    assert torch.autograd.gradcheck(run, (x, norm.weight, norm.bias))
    assert torch.autograd.gradgradcheck(run, (x, norm.weight, norm.bias))


def test_the_head_norm_is_a_layer_norm_of_each_head_s_read_out() -> None:
    # Against the same model without the norm, written out here: the read-out r (the plain
    # output over the output gate) normalised over each head's d features, biased variance,
    # eps 1e-5, then the per-feature weight and bias, then the output gate.
    torch.manual_seed(6)
    normed = mlstm(hidden_size=6, num_layers=1, head_norm=True)
    plain = mlstm(hidden_size=6, num_layers=1)
    plain.i2h.load_state_dict(normed.i2h.state_dict())
    x = torch.randn(3, 5, INPUT, dtype=DOUBLE)
    for engine in ("auto", "reference"):
        normed.engine = plain.engine = engine
        gate = torch.sigmoid(normed.i2h(x)[..., 3 * 6 : 4 * 6])
        read = (plain(x)[0] / gate).unflatten(-1, (HEADS, 3))
        mean = read.mean(-1, keepdim=True)
        variance = ((read - mean) ** 2).mean(-1, keepdim=True)
        want = ((read - mean) / torch.sqrt(variance + 1e-5)).flatten(-2)
        want = gate * (want * normed.norm.weight + normed.norm.bias)
        close(normed(x)[0], want, atol=1e-12)


def test_the_head_norm_s_parts_and_options() -> None:
    model = MLSTM(3, 8, num_heads=2, head_norm=True, bidirectional=True, bias=False)
    assert [name for name, _ in model.named_parameters()] == [
        "i2h.weight",
        "norm.weight",
        "i2h_reverse.weight",
        "norm_reverse.weight",
    ]
    assert "head_norm=True" in repr(model)
    assert MLSTM(3, 8, num_heads=2).head_norm is False
    with pytest.raises(TypeError, match="expected head_norm to be a bool, got 1"):
        MLSTM(3, 8, num_heads=2, head_norm=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"at least 2 features per head .* got hidden_size / num"):
        MLSTM(3, 8, num_heads=8, head_norm=True)


def test_the_step_function_by_hand_against_the_chunkwise_function() -> None:
    # The two pure functions directly, one chunk and many, from a random state.
    generator = torch.Generator().manual_seed(5)
    batch, steps, heads, size = 2, 9, 3, 2
    width = heads * size
    projection = torch.randn(batch, steps, 4 * width + 2 * heads, dtype=DOUBLE, generator=generator)
    state = (
        torch.randn(batch, heads * size * size, dtype=DOUBLE, generator=generator),
        torch.randn(batch, width, dtype=DOUBLE, generator=generator),
        torch.randn(batch, heads, dtype=DOUBLE, generator=generator),
    )
    outputs, stepped = [], state
    for t in range(steps):
        out, stepped = lstm.mlstm_step(projection[:, t], stepped, heads)
        outputs.append(out)
    for chunk_size in (1, 4, 9, 100):
        hidden, final = lstm.mlstm_chunkwise(projection, state, heads, chunk_size)
        close(hidden, torch.stack(outputs, dim=1))
        close(final, stepped)


# ------------------------------------------------------------------ numerics

SATURATING = 1e4


@pytest.mark.parametrize("scale", [1.0, SATURATING])
def test_finite_over_ten_thousand_steps(scale: float) -> None:
    torch.manual_seed(6)
    model = MLSTM(2, 4, num_heads=2)
    x = (scale * torch.randn(1, 10_000, 2)).requires_grad_()
    out, (hidden, state) = model(x)
    loss = out.sum() + sum(part.sum() for part in state)
    loss.backward()
    for tensor in (out, hidden, *state, x.grad, *(p.grad for p in model.parameters())):
        assert tensor is not None
        assert torch.isfinite(tensor).all()
    with torch.no_grad():  # the step form over the same steps
        model.engine = "reference"
        stepped, (_, stepped_state) = model(x)
    for tensor in (stepped, *stepped_state):
        assert torch.isfinite(tensor).all()
    if scale == 1.0:  # saturated, float32 rounds the chunk's cumulative gates differently
        torch.testing.assert_close(stepped, out, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(stepped_state[2], state[2], rtol=1e-4, atol=1e-3)


def test_saturating_inputs_in_float64_both_forms_agree() -> None:
    torch.manual_seed(6)
    model = MLSTM(2, 4, num_heads=2, dtype=DOUBLE)
    x = SATURATING * torch.randn(2, 2_000, 2, dtype=DOUBLE)
    with torch.no_grad():
        out, (_, state) = model(x)
        model.engine = "reference"
        stepped, (_, stepped_state) = model(x)
    assert out.abs().max() > 100  # saturated: far from the unit scale
    torch.testing.assert_close(out, stepped, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(state, stepped_state, rtol=1e-8, atol=1e-8)


# Biases of the input and forget gates: open, shut, or both, beyond what exp() represents in
# float32 (exp(89) = inf); the stabiliser keeps every gate at most 1.
GATE_BIASES = [(1e4, 1e4), (1e4, -1e4), (-1e4, 1e4), (-1e4, -1e4), (100.0, -100.0)]


@pytest.mark.parametrize(("input_bias", "forget_bias"), GATE_BIASES)
def test_saturated_gates_stay_finite_on_both_forms(input_bias: float, forget_bias: float) -> None:
    torch.manual_seed(7)
    model = MLSTM(3, 4, num_heads=2, chunk_size=16)
    with torch.no_grad():
        model.i2h.bias[-4:-2], model.i2h.bias[-2:] = input_bias, forget_bias
    x = torch.randn(2, 100, 3, requires_grad=True)
    for engine in ("auto", "reference"):
        model.engine = engine
        out, (hidden, state) = model(x)
        (grad,) = torch.autograd.grad(out.sum() + hidden.sum(), x)
        for tensor in (out, hidden, *state, grad):
            assert torch.isfinite(tensor).all(), engine
        assert out.abs().max() <= 1e6


def relative(got: Tensor, want: Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


@pytest.mark.parametrize("head_norm", [False, True])
@pytest.mark.parametrize("seed", [8, 9, 10])
def test_bf16_autocast_is_close_to_float32(seed: int, head_norm: bool) -> None:
    # Under autocast the projection runs in bf16 and the rest in float32 (both forms), the
    # per-head norm included.
    torch.manual_seed(seed)
    model = MLSTM(16, 32, num_heads=4, head_norm=head_norm)
    x = torch.randn(4, 200, 16)
    with torch.no_grad():
        want, (_, want_state) = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.engine_for(x).name == "parallel"
            got, (_, got_state) = model(x)
            model.engine = "reference"
            stepped, _ = model(x)
    assert got.dtype == torch.float32
    assert all(part.dtype == torch.float32 for part in got_state)
    assert relative(got, want) < 0.03
    torch.testing.assert_close(got_state[2], want_state[2], rtol=0.01, atol=0.01)
    # The parallel form adds nothing to bf16's rounding of the projection.
    assert relative(got, stepped) < 1e-3


def test_bf16_autocast_both_forms_agree_through_layers() -> None:
    # A stack of bare cells amplifies the projection's rounding: one layer's outputs (up to
    # about 15 here) drive the next layer's exponential input gate and the read-out's
    # denominator |n.q| comes near 0 at a few steps (2 layers: 3 to 22 % relative error
    # over seeds 8-13, while one layer stays under 3 %). Both forms round alike.
    torch.manual_seed(8)
    model = MLSTM(16, 32, num_heads=4, num_layers=2)
    x = torch.randn(4, 200, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = model(x)
        model.engine = "reference"
        stepped, _ = model(x)
    assert torch.isfinite(got).all()
    assert relative(got, stepped) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_keeps_its_dtype_and_carries_its_state(dtype: torch.dtype) -> None:
    # The step functions compute in float32 and give back the state's dtype.
    torch.manual_seed(12)
    model = MLSTM(3, 8, num_heads=2, dtype=dtype)
    x = torch.randn(2, 9, 3, dtype=dtype)
    with torch.no_grad():
        out, (hidden, state) = model(x)
        second, _ = model(x[:, 4:], model(x[:, :4])[1])
        model.engine = "reference"
        stepped, _ = model(x)
    assert out.dtype == hidden.dtype == dtype
    assert all(part.dtype == dtype for part in state)
    tolerance = 0.02 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(second, out[:, 4:], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(stepped, out, rtol=tolerance, atol=tolerance)


# ------------------------------------------------------------------ the module


def test_engine_choice_names_the_parallel_form_and_what_blocks_it() -> None:
    model = mlstm()
    x = torch.randn(2, 5, INPUT, dtype=DOUBLE)
    engine = model.engine_for(x)
    assert engine.name == "parallel"
    assert "chunkwise" in engine.reason
    assert model.engine_for(x[:, :1]) == lstm.Engine(
        "reference", "a single step: forward_cell, the recurrent form"
    )
    handle = model.i2h.register_forward_hook(lambda *args: None)
    assert model.engine_for(x) == lstm.Engine(
        "reference", "the parallel form does not apply: i2h has forward hooks"
    )
    handle.remove()
    model.engine = "reference"
    assert model.engine_for(x).name == "reference"


def test_a_parallel_fast_path_needs_its_method() -> None:
    with pytest.raises(TypeError, match="expected a parallel_direction method"):

        class Broken(lstm.Recurrent):
            gate_blocks = 4
            fast_path = FastPath("parallel", "nothing")

            def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> Any:
                return lstm.lstm_pointwise(self.i2h(x) + self.h2h(hidden), state)


def test_a_subclass_that_rewrites_the_step_runs_it() -> None:
    class Doubled(MLSTM):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Any) -> Any:
            out, state = super().forward_cell(x, hidden, state)
            return 2 * out, state

    model = Doubled(INPUT, HIDDEN, num_heads=HEADS, dtype=DOUBLE)
    x = torch.randn(2, 4, INPUT, dtype=DOUBLE)
    assert model.engine_for(x).name == "reference"
    plain = MLSTM(INPUT, HIDDEN, num_heads=HEADS, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
    close(model(x)[0], 2 * plain(x)[0])


def test_state_shapes_and_forget_bias_initialisation() -> None:
    model = MLSTM(5, 8, num_heads=2, num_layers=2, bidirectional=True)
    out, (hidden, (memory, normaliser, stabiliser)) = model(torch.randn(3, 4, 5))
    assert out.shape == (3, 4, 16)
    assert hidden.shape == (4, 3, 8)
    assert memory.shape == (4, 3, 2 * 4 * 4)
    assert normaliser.shape == (4, 3, 8)
    assert stabiliser.shape == (4, 3, 2)
    assert "num_heads=2, chunk_size=64" in repr(model)
    model.reset_parameters()
    for index in model.cell_indices():
        bias = model.cell_parts(*index)["i2h"].bias
        close(bias[-2:].detach(), torch.tensor([3.0, 6.0]), atol=0)
    assert MLSTM(5, 8, num_heads=2, bias=False).i2h.bias is None


def test_unbatched_and_packed_input() -> None:
    torch.manual_seed(9)
    model = mlstm(chunk_size=2)
    x = torch.randn(6, INPUT, dtype=DOUBLE)
    out, (hidden, state) = model(x)
    batched, (batched_hidden, batched_state) = model(x.unsqueeze(0))
    close(out, batched[0])
    close((hidden, *state), (batched_hidden[:, 0], *(part[:, 0] for part in batched_state)))
    padded = torch.randn(3, 5, INPUT, dtype=DOUBLE)
    lengths = torch.tensor([5, 2, 4])
    packed = nn.utils.rnn.pack_padded_sequence(
        padded, lengths, batch_first=True, enforce_sorted=False
    )
    packed_out, (packed_hidden, _) = model(packed)
    unpacked, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True)
    want, (want_hidden, _) = model(padded, lengths=lengths)
    close(unpacked, want)
    close(packed_hidden, want_hidden)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hidden_size": 6, "num_heads": 4}, "hidden_size to be a multiple of num_heads=4, got 6"),
        ({"num_heads": 0}, "num_heads"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"recurrent_dropout": 0.1}, "expected recurrent_dropout=0.0"),
        ({"zoneout": 0.1}, "expected zoneout=0.0"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    options = {"hidden_size": 8, **options}
    with pytest.raises(ValueError, match=message):
        MLSTM(3, **options)


def test_a_direct_step_with_a_wrong_state_names_the_shapes() -> None:
    model = MLSTM(3, 8, num_heads=2)
    x, hidden = torch.randn(5, 3), torch.zeros(5, 8)
    memory, normaliser, stabiliser = model.init_hidden(x.unsqueeze(1))[1]
    out, _ = model.forward_cell(x, hidden, (memory, normaliser, stabiliser))
    assert out.shape == (5, 8)
    with pytest.raises(lstm.ShapeError, match=r"state\[0\] of shape \(5, 32\), got \(5, 8\)"):
        model.forward_cell(x, hidden, (normaliser, normaliser, stabiliser))
    with pytest.raises(lstm.ShapeError, match=r"state\[2\] of shape \(5, 2\), got \(5, 8\)"):
        model.forward_cell(x, hidden, (memory, normaliser, normaliser))


# ------------------------------------------------------------------ the command line


def test_the_command_line_trains_evaluates_samples_and_times_it(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, printed, _ = run_cli(
        train_args(corpus_file, out, "--cell", "mlstm", "--steps", "4"), capsys
    )
    assert code == 0
    assert "engine: parallel (MLSTM's own step" in printed  # seq_len 8: the parallel form
    code, printed, _ = run_cli(["evaluate", "--checkpoint", str(out), "--device", "cpu"], capsys)
    assert code == 0
    assert "test " in printed
    sample = ["generate", "--checkpoint", str(out), "--prompt", "the", "--length", "20"]
    code, printed, _ = run_cli([*sample, "--seed", "1", "--device", "cpu"], capsys)
    assert code == 0
    assert printed.startswith("the")
    bench = ["bench", "--cell", "mlstm", "--shape", "2,6,3,4", "--rounds", "1"]
    bench += ["--min-run-time", "0.01", "--no-memory", "--json", str(tmp_path / "bench.json")]
    code, printed, _ = run_cli(bench, capsys)
    assert code == 0
    assert "mlstm" in printed
    assert "parallel" in printed
