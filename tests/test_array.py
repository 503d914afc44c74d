"""The Array-LSTM family against a step-by-step reference of Rocki's equations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import lstm
from builders import DOUBLE, assert_matches_reference, close, gradients, results
from lstm import (
    LSTM,
    ArrayLSTM,
    AttentionArrayLSTM,
    Recurrent,
    StochasticArrayLSTM,
    StochasticMemoryArrayLSTM,
    create,
    stochastic_memory_lanes,
    stochastic_output_pooling,
)
from lstm.cells.array import _choose_lanes
from reference import Step, run_reference, stack_states, zeros_initial

K = 3


Combine = Callable[[list[Tensor], list[Tensor]], Tensor]
"""How a step's lanes make h, from every lane's output gate and new cell state (H,) each."""


def summed(outputs: list[Tensor], states: list[Tensor]) -> Tensor:
    """h = sum_j o^j tanh(c^j), the original's update_hidden."""
    hidden = torch.zeros_like(outputs[0])
    for o, c in zip(outputs, states, strict=True):
        hidden = hidden + o * torch.tanh(c)
    return hidden


def likeliest_lane(outputs: list[Tensor], states: list[Tensor]) -> Tensor:
    """Per unit, the lane whose output gate is largest gives h = o tanh(c)."""
    hidden = torch.zeros_like(outputs[0])
    for u in range(hidden.shape[0]):
        best = max(range(len(outputs)), key=lambda j: float(outputs[j][u].detach()))
        hidden[u] = outputs[best][u] * torch.tanh(states[best][u])
    return hidden


def gate_blocks(a: Tensor, j: int, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lane j's pre-activations f, i, o, g: rows [4Hj, 4H(j+1)), in that order."""
    block = a[4 * size * j : 4 * size * (j + 1)]
    return block[:size], block[size : 2 * size], block[2 * size : 3 * size], block[3 * size :]


def array_step(model: ArrayLSTM, combine: Combine = summed) -> Step:
    """One step of one cell, lane by lane, on 1-D vectors; the state is the lanes' (k, H).

    Lane j of a cell uses rows [4Hj, 4H(j+1)) of i2h and h2h, blocks f, i, o, g;
    c^j = f^j c^j + i^j g^j and h = combine(o, c) (by default sum_j o^j tanh(c^j)).
    """

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        i2h, h2h = parts["i2h"], parts["h2h"]
        size = h.shape[0]
        a = i2h.weight @ x + i2h.bias + h2h.weight @ h + h2h.bias
        outputs, lanes = [], []
        for j in range(c.shape[0]):
            f, i, o, g = gate_blocks(a, j, size)
            lanes.append(torch.sigmoid(f) * c[j] + torch.sigmoid(i) * torch.tanh(g))
            outputs.append(torch.sigmoid(o))
        return combine(outputs, lanes), torch.stack(lanes)

    return step


def attention_step(
    weights: Callable[[int, int], dict[str, Tensor]], max_pooling: bool, combine: Combine = summed
) -> Step:
    """Soft lane attention, as ARRAY-LSTM.md writes the original's equations, unit by unit.

    ``weights(layer, direction)`` gives the cell's i2h/h2h/i2a weights and biases by key
    (``"i2h.weight"``, ...). Per unit u: a_j = sigmoid(i2a rows H*j + u), s_j = the softmax
    of a over the lanes (max pooling: every s_j is the largest), f, i, o scaled by s_j,
    c^j = c^j (1 - f^j) + i^j g^j, h = combine(o, c).
    """

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        w = weights(layer, direction)
        lanes, size = c.shape
        a = w["i2h.weight"] @ x + w["i2h.bias"] + w["h2h.weight"] @ h + w["h2h.bias"]
        attention = torch.sigmoid(w["i2a.weight"] @ x + w["i2a.bias"])  # (k*H,)
        scale = []
        for u in range(size):
            scores = [attention[size * j + u] for j in range(lanes)]
            total = sum(torch.exp(score) for score in scores)
            soft = [torch.exp(score) / total for score in scores]
            scale.append(
                torch.stack(
                    [max(soft, key=lambda weight: float(weight.detach()))] * lanes
                    if max_pooling
                    else soft
                )
            )
        s = torch.stack(scale, dim=1)  # (k, H)
        outputs, new_lanes = [], []
        for j in range(lanes):
            f, i, o, g = gate_blocks(a, j, size)
            forget = s[j] * torch.sigmoid(f)
            new_lanes.append(c[j] * (1 - forget) + s[j] * torch.sigmoid(i) * torch.tanh(g))
            outputs.append(s[j] * torch.sigmoid(o))
        return combine(outputs, new_lanes), torch.stack(new_lanes)

    return step


def module_weights(model: Recurrent) -> Callable[[int, int], dict[str, Tensor]]:
    """A cell's parameters by their single-cell state_dict key (``"i2h.weight"``, ...)."""

    def weights(layer: int, direction: int) -> dict[str, Tensor]:
        parts = model.cell_parts(layer, direction)
        return {
            f"{name}.{kind}": getattr(part, kind)
            for name, part in parts.items()
            for kind in ("weight", "bias")
        }

    return weights


def memory_step(model: ArrayLSTM, combine: Combine = summed) -> Step:
    """The stochastic memory array with its most likely lane, unit by unit, from ARRAY-LSTM.md.

    Per unit u, j* is the lane with the largest input-gate pre-activation (the argmax of
    its softmax); only lane j* is written, c = f c + i g; h = combine(o, c).
    """

    def step(layer: int, direction: int, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        parts = model.cell_parts(layer, direction)
        i2h, h2h = parts["i2h"], parts["h2h"]
        lanes, size = c.shape
        a = i2h.weight @ x + i2h.bias + h2h.weight @ h + h2h.bias
        blocks = [gate_blocks(a, j, size) for j in range(lanes)]
        new = [[c[j, u] for u in range(size)] for j in range(lanes)]
        for u in range(size):
            best = max(range(lanes), key=lambda j: float(blocks[j][1][u].detach()))
            f, i, _, g = (block[u] for block in blocks[best])
            new[best][u] = torch.sigmoid(f) * c[best, u] + torch.sigmoid(i) * torch.tanh(g)
        new_lanes = [torch.stack(lane) for lane in new]
        outputs = [torch.sigmoid(block[2]) for block in blocks]
        return combine(outputs, new_lanes), torch.stack(new_lanes)

    return step


@pytest.mark.parametrize("engine", ["auto", "reference"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, True)])
def test_matches_reference_equations(num_layers: int, bidirectional: bool, engine: str) -> None:
    model = ArrayLSTM(3, 4, K, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE)
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, array_step(model), initial, [5, 2, 4, 1])


def test_one_lane_is_the_lstm() -> None:
    array = ArrayLSTM(3, 4, 1, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(array.state_dict())
    x = torch.randn(2, 6, 3, dtype=DOUBLE)
    torch.testing.assert_close(array(x), plain(x), rtol=0, atol=1e-12)


def test_original_checkpoint_loads_and_k_is_recoverable() -> None:
    hidden_size = 4
    checkpoint = {
        "i2h.weight": torch.randn(4 * hidden_size * K, 3, dtype=DOUBLE),
        "i2h.bias": torch.randn(4 * hidden_size * K, dtype=DOUBLE),
        "h2h.weight": torch.randn(4 * hidden_size * K, hidden_size, dtype=DOUBLE),
        "h2h.bias": torch.randn(4 * hidden_size * K, dtype=DOUBLE),
    }
    k = checkpoint["i2h.weight"].shape[0] // (4 * hidden_size)  # as the original's clients do
    model = ArrayLSTM(3, hidden_size, k, dtype=DOUBLE)
    model.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 5, 3, dtype=DOUBLE)
    _, (hidden, state) = model(x)
    assert hidden.shape == (1, 2, hidden_size)
    assert state.shape == (K, 2, hidden_size)
    initial = zeros_initial(x, hidden_size, (K, hidden_size))
    assert_matches_reference(model, x, array_step(model), initial)


def test_input_projection_is_hoisted_unless_forward_cell_is_overridden(
    linear_calls: Counter[int],
) -> None:
    calls = linear_calls

    class Doubled(ArrayLSTM):
        def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
            hidden, state = super().forward_cell(x, hidden, state)
            return 2 * hidden, state

    # The compiled and fused engines read both maps' weights directly: one product of i2h's
    # weight for all steps, h2h's weight at every step; neither module is called. The
    # compiled engine does so for a step of the user's own too.
    for model, engine in [(ArrayLSTM(3, 4, K), "auto"), (Doubled(3, 4, K), "auto")]:
        model.engine = engine
        calls.clear()
        model(torch.randn(2, 7, 3))
        assert (calls[id(model.i2h)], calls[id(model.h2h)]) == (0, 0), engine
    model = ArrayLSTM(3, 4, K)
    model.engine = "fused"
    calls.clear()
    model(torch.randn(2, 7, 3))
    assert (calls[id(model.i2h)], calls[id(model.h2h)]) == (0, 0)

    combined = with_max_combination(ArrayLSTM)(3, 4, K)
    combined.engine = "fused"  # the fused rule lacks the override: hoisted, forward_cell each step
    calls.clear()
    combined(torch.randn(2, 7, 3))
    assert (calls[id(combined.i2h)], calls[id(combined.h2h)]) == (1, 7)

    custom = Doubled(3, 4, K)
    custom.engine = "reference"
    calls.clear()
    custom(torch.randn(2, 7, 3))
    assert calls[id(custom.i2h)] == 7


def test_forget_bias_is_set_in_every_lane() -> None:
    model = ArrayLSTM(3, 4, K, forget_bias=1.0)
    blocks = model.i2h.bias.detach().view(K, 4, 4)
    assert torch.equal(blocks[:, 0], torch.ones(K, 4))
    assert torch.equal(model.h2h.bias.detach().view(K, 4, 4)[:, 0], torch.zeros(K, 4))


def test_create_passes_k_to_lane_cells_only() -> None:
    model = create("array", 3, 4, k=5)
    assert isinstance(model, ArrayLSTM)
    assert model.k == 5
    with pytest.raises(ValueError, match=r"^cell 'lstm' has no lanes; expected k=None, got k=2$"):
        create("lstm", 3, 4, k=2)


@pytest.mark.parametrize(
    ("k", "error", "pattern"),
    [
        (0, ValueError, r"^ArrayLSTM: expected k >= 1, got 0$"),
        (-2, ValueError, r"^ArrayLSTM: expected k >= 1, got -2$"),
        (2.0, TypeError, r"^ArrayLSTM: expected k to be an int, got float 2.0$"),
        ("4", TypeError, r"^ArrayLSTM: expected k to be an int, got str '4'$"),
    ],
)
def test_bad_k(k: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ArrayLSTM(3, 4, k)  # type: ignore[arg-type]


def test_wrong_state_shape_names_the_lanes() -> None:
    model = ArrayLSTM(3, 4, K)
    hidden = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match=r"expected state of shape \(3, 2, 4\) .*got \(1, 2, 4\)"):
        model(torch.randn(2, 5, 3), (hidden, torch.zeros(1, 2, 4)))


def test_not_convertible_to_torch() -> None:
    with pytest.raises(
        TypeError, match="ArrayLSTM which overrides build_cell, forward_cell, init_hidden"
    ):
        ArrayLSTM(3, 4, K).to_torch()


# ------------------------------------------------------------------ stochastic output pooling


def _lane_values(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From the equations: every lane's output gate, new cell state and candidate output."""
    lanes, batch, size = state.shape
    blocks = gates.view(batch, lanes, 4, size).transpose(0, 1)  # (k, B, 4, H)
    f, i, o = (torch.sigmoid(blocks[:, :, n]) for n in range(3))
    c = f * state + i * torch.tanh(blocks[:, :, 3])
    return o, c, o * torch.tanh(c)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_stochastic_pooling_takes_each_units_likeliest_lane_by_default(
    engine: str, mode: str
) -> None:
    # The original's behaviour in both modes: clients of the original never call .eval().
    model = StochasticArrayLSTM(3, 4, K, num_layers=2, bidirectional=True, dtype=DOUBLE)
    model.train(mode == "train")
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, array_step(model, likeliest_lane), initial, [5, 2, 4, 1])


def test_stochastic_pooling_default_is_deterministic_in_training() -> None:
    model = StochasticArrayLSTM(3, 4, K, num_layers=2).train()
    x = torch.randn(2, 6, 3)
    first = model(x)
    torch.manual_seed(123)  # another generator state: nothing may depend on it
    close(model(x), first, atol=0)


def test_sample_lanes_draws_in_training_only() -> None:
    model = StochasticArrayLSTM(3, 4, K, sample_lanes=True, dtype=DOUBLE)
    plain = StochasticArrayLSTM(3, 4, K, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(8, 6, 3, dtype=DOUBLE)
    close(model.eval()(x), plain.train()(x), atol=0)  # eval: the likeliest lane
    model.train()
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(1)
    close(model(x), first, atol=0)  # seeded: reproducible
    assert not torch.allclose(model(x)[0], first[0])  # but drawn
    assert "sample_lanes=True" in repr(model)


def test_stochastic_pooling_draws_lanes_from_the_softmax_of_output_gates() -> None:
    torch.manual_seed(0)
    lanes, size, draws = 3, 4, 20000
    gates = torch.randn(1, lanes * 4 * size, dtype=DOUBLE).expand(draws, -1)
    state = torch.randn(lanes, 1, size, dtype=DOUBLE).expand(-1, draws, -1)
    hidden, new_state = stochastic_output_pooling(gates, state, sample=True)
    o, c, candidates = _lane_values(gates[:1], state[:, :1])
    torch.testing.assert_close(new_state[:, :1], c, rtol=0, atol=1e-12)  # lanes all update
    # Each unit's output is one lane's candidate; count which.
    matches = (hidden.unsqueeze(0) - candidates).abs() < 1e-12  # (k, draws, H)
    assert torch.equal(matches.sum(0), torch.ones(draws, size, dtype=torch.long))
    frequencies = matches.double().mean(dim=1)  # (k, H)
    expected = torch.softmax(o[:, 0], dim=0)  # (k, H)
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.02)


CHI_SQUARE_3_DOF_AT_0_001 = 16.266
"""The chi-square distribution's 0.999 quantile for 3 degrees of freedom (k = 4 lanes): a
statistic above it has probability 0.001 when the lanes are drawn from the expected
probabilities (scipy.stats.chi2.ppf(0.999, 3) = 16.2662)."""


def chi_square(lanes: Tensor, expected: Tensor) -> float:
    """Pearson's statistic, sum_j (observed_j - n p_j)^2 / (n p_j), of drawn lanes against p."""
    observed = torch.bincount(lanes.flatten(), minlength=expected.numel()).double()
    counts = expected.double() * lanes.numel()
    return float(((observed - counts) ** 2 / counts).sum())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_drawn_lanes_follow_the_softmax_of_the_scores(dtype: torch.dtype) -> None:
    # Gumbel-max: argmax_j (s_j + G_j) ~ softmax(s). Scores are logits up to a constant.
    torch.manual_seed(0)
    rows = 200_000
    scores = (torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=DOUBLE).log() + 2.5).to(dtype)
    expected = torch.softmax(scores.double(), dim=0)  # of the scores as stored in dtype
    lanes = _choose_lanes(scores.view(4, 1, 1).expand(4, rows // 50, 50), sample=True)
    assert lanes.shape == (1, rows // 50, 50)
    assert chi_square(lanes, expected) < CHI_SQUARE_3_DOF_AT_0_001
    # The test can fail: the same draws reject uniform lanes, and lanes 1 point off.
    assert chi_square(lanes, torch.full((4,), 0.25)) > 100 * CHI_SQUARE_3_DOF_AT_0_001
    off = torch.tensor([0.11, 0.19, 0.3, 0.4])
    assert chi_square(lanes, off) > 5 * CHI_SQUARE_3_DOF_AT_0_001


def test_drawn_lanes_are_seeded_and_skip_impossible_lanes() -> None:
    inf = float("inf")
    scores = torch.tensor([0.0, -inf, 1.0, -inf]).view(4, 1, 1).expand(4, 500, 8)
    torch.manual_seed(3)
    first = _choose_lanes(scores, sample=True)
    torch.manual_seed(3)
    assert torch.equal(_choose_lanes(scores, sample=True), first)  # seeded: reproducible
    assert not torch.equal(_choose_lanes(scores, sample=True), first)  # but drawn
    # p_j = 0 for a score of -inf: such a lane is never drawn; both others are.
    assert torch.equal(first.unique(), torch.tensor([0, 2]))
    # No lane has a probability: lane 0, not an error or NaN (the softmax is undefined).
    none = torch.full((4, 3, 5), -inf)
    assert torch.equal(_choose_lanes(none, sample=True), torch.zeros(1, 3, 5, dtype=torch.long))


def test_sample_lanes_draws_without_multinomial(monkeypatch: pytest.MonkeyPatch) -> None:
    # The issue: a draw that costs no more than the rest of the step (Gumbel-max, not a
    # torch.multinomial over batch * hidden rows at every step).
    def refuse(*args: object, **kwargs: object) -> Tensor:
        raise AssertionError("torch.multinomial called")

    monkeypatch.setattr(torch, "multinomial", refuse)
    x = torch.randn(2, 5, 3)
    for cls in (StochasticArrayLSTM, StochasticMemoryArrayLSTM):
        model = cls(3, 4, K, sample_lanes=True).train()
        out, _ = model(x)
        assert torch.isfinite(out).all()


def test_stochastic_pooling_trains() -> None:
    model = StochasticArrayLSTM(3, 4, K).train()
    out, _ = model(torch.randn(2, 5, 3))
    out.sum().backward()
    assert model.i2h.weight.grad is not None
    assert model.i2h.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [StochasticArrayLSTM, StochasticMemoryArrayLSTM])
def test_bad_sample_lanes(cls: type[ArrayLSTM]) -> None:
    pattern = rf"^{cls.__name__}: expected sample_lanes to be a bool, got int 1$"
    with pytest.raises(TypeError, match=pattern):
        cls(3, 4, K, sample_lanes=1)  # type: ignore[call-arg]


# ------------------------------------------------------------------ soft lane attention

LAYOUTS = [(1, False, [5, 5, 5, 5]), (1, True, [5, 2, 4, 1]), (2, False, [3, 5, 1, 2])]
LAYOUTS += [(2, True, [5, 2, 4, 1])]
"""(num_layers, bidirectional, lengths) for the parity tests."""


@pytest.mark.parametrize("max_pooling", [False, True])
@pytest.mark.parametrize("engine", ["auto", "hoisted", "reference"])
@pytest.mark.parametrize(("num_layers", "bidirectional", "lengths"), LAYOUTS)
def test_attention_matches_reference_equations(
    num_layers: int, bidirectional: bool, lengths: list[int], engine: str, max_pooling: bool
) -> None:
    model = AttentionArrayLSTM(
        3, 4, K, max_pooling, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE
    )
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    step = attention_step(module_weights(model), max_pooling)
    assert_matches_reference(model, x, step, initial, lengths)


def test_attention_runs_compiled_unless_i2a_is_not_a_plain_linear() -> None:
    model = AttentionArrayLSTM(3, 4, K, num_layers=2, dtype=DOUBLE)
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert model.engine_for(x).name == "compiled"
    assert model.i2a_l1.weight.shape == (4 * K, 4)  # layer 1 reads layer 0: hidden_size
    # The fast engines apply i2a to all steps at once: only a plain nn.Linear may be.
    torch.nn.utils.parametrizations.weight_norm(model.i2a_l1)
    engine = model.engine_for(x)
    assert engine.name == "hoisted"
    assert engine.reason.startswith("the compiled engine does not apply: ")
    assert "i2a_l1 (a ParametrizedLinear) is applied to x" in engine.reason
    assert "a matrix product inside the step does not fit" in engine.reason
    assert engine.reason.endswith(
        "the fused engine does not apply: i2a_l1 is a ParametrizedLinear, not a plain nn.Linear"
    )
    step = attention_step(module_weights(model), False)
    assert_matches_reference(model, x, step, zeros_initial(x, 4, (K, 4)), [5, 2, 4, 1])


def _tie_two_lanes(model: AttentionArrayLSTM) -> None:
    """In every cell, lane 1's attention rows equal lane 0's, and lane 2's are far lower:
    every unit's largest weight is shared by lanes 0 and 1."""
    size = model.hidden_size
    with torch.no_grad():
        for layer, direction in model.cell_indices():
            i2a = model.cell_parts(layer, direction)["i2a"]
            i2a.weight[size : 2 * size] = i2a.weight[:size]
            i2a.bias[size : 2 * size] = i2a.bias[:size]
            i2a.bias[2 * size :] = -20.0


@pytest.mark.parametrize("engine", ["fused", "compiled"])
@pytest.mark.parametrize("tied", [False, True])
def test_attention_max_pooling_gradients_match_autograd_on_the_fast_engines(
    tied: bool, engine: str
) -> None:
    # The fast engines compute the weights of all steps in their projection; with max pooling
    # the gradient of the max splits evenly among tied lanes, as autograd's amax does.
    model = AttentionArrayLSTM(3, 4, K, True, num_layers=2, bidirectional=True, dtype=DOUBLE)
    model.engine = engine
    if tied:
        _tie_two_lanes(model)
    reference = AttentionArrayLSTM(3, 4, K, True, num_layers=2, bidirectional=True, dtype=DOUBLE)
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    if tied:
        weights = torch.softmax(torch.sigmoid(model.i2a(x)).view(4, 5, K, 4), dim=2)
        assert torch.equal(weights[:, :, 0], weights[:, :, 1])
        assert bool((weights[:, :, 0] > weights[:, :, 2]).all())
    assert model.engine_for(x).name == engine
    found = []
    for module in (model, reference):
        given = x.clone().requires_grad_()
        got = results(*module(given, lengths=[5, 2, 4, 1]))
        found.append((got, gradients(got, [given, *module.parameters()])))
    close(found[0][0], found[1][0])
    close(found[0][1], found[1][1], atol=1e-10)
    if tied:  # an even split gives both lanes of a tie the same gradient
        bias = dict(zip([n for n, _ in model.named_parameters()], found[0][1][1:], strict=True))
        for name in ("i2a.bias", "i2a_reverse.bias", "i2a_l1.bias", "i2a_l1_reverse.bias"):
            assert torch.equal(bias[name][:4], bias[name][4:8])
            assert bias[name][:4].abs().sum() > 0


def test_original_attention_checkpoint_loads_and_matches_its_equations() -> None:
    # The original package's single-layer unidirectional AttentionArrayLSTM state_dict.
    hidden_size, input_size = 4, 3
    width = 4 * hidden_size * K
    checkpoint = {
        "i2h.weight": torch.randn(width, input_size, dtype=DOUBLE),
        "i2h.bias": torch.randn(width, dtype=DOUBLE),
        "h2h.weight": torch.randn(width, hidden_size, dtype=DOUBLE),
        "h2h.bias": torch.randn(width, dtype=DOUBLE),
        "i2a.weight": torch.randn(hidden_size * K, input_size, dtype=DOUBLE),
        "i2a.bias": torch.randn(hidden_size * K, dtype=DOUBLE),
    }
    model = AttentionArrayLSTM(input_size, hidden_size, K, dtype=DOUBLE)
    assert list(model.state_dict()) == list(checkpoint)
    model.load_state_dict(checkpoint, strict=True)
    x = torch.randn(2, 5, input_size, dtype=DOUBLE)
    initial = zeros_initial(x, hidden_size, (K, hidden_size))
    # The reference reads the checkpoint's tensors, not the module.
    step = attention_step(lambda *_: checkpoint, False)
    ref_out, ref_hidden, ref_states = run_reference(x, step, initial)
    out, (hidden, state) = model(x)
    close((out, hidden, state), (ref_out, ref_hidden, stack_states(ref_states)))


def test_attention_with_one_lane_forgets_by_amount() -> None:
    # k = 1: s = 1 and c' = c (1 - sigmoid(f)) + sigmoid(i) tanh(g), not the LSTM.
    model = AttentionArrayLSTM(3, 4, 1, dtype=DOUBLE)
    x = torch.randn(2, 3, dtype=DOUBLE)
    hidden, state = torch.randn(2, 4, dtype=DOUBLE), torch.randn(1, 2, 4, dtype=DOUBLE)
    got_hidden, got_state = model.forward_cell(x, hidden, state)
    f, i, o, g = (model.i2h(x) + model.h2h(hidden)).chunk(4, dim=-1)
    want_state = state[0] * (1 - torch.sigmoid(f)) + torch.sigmoid(i) * torch.tanh(g)
    close((got_hidden, got_state[0]), (torch.sigmoid(o) * torch.tanh(want_state), want_state))


def test_attention_options_are_checked_and_shown() -> None:
    with pytest.raises(
        TypeError, match=r"^AttentionArrayLSTM: expected max_pooling to be a bool, got str 'no'$"
    ):
        AttentionArrayLSTM(3, 4, K, "no")  # type: ignore[arg-type]
    assert "k=3, max_pooling=True" in repr(AttentionArrayLSTM(3, 4, K, True))
    assert "max_pooling" not in repr(AttentionArrayLSTM(3, 4, K))


# ------------------------------------------------------------------ stochastic memory array


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("engine", ["auto", "hoisted", "reference"])
@pytest.mark.parametrize(("num_layers", "bidirectional", "lengths"), LAYOUTS)
def test_memory_matches_reference_equations(
    num_layers: int, bidirectional: bool, lengths: list[int], engine: str, mode: str
) -> None:
    model = StochasticMemoryArrayLSTM(
        3, 4, K, num_layers=num_layers, bidirectional=bidirectional, dtype=DOUBLE
    )
    model.train(mode == "train")  # the default writes the likeliest lane in both modes
    model.engine = engine
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, memory_step(model), initial, lengths)


def test_memory_sample_lanes_in_eval_writes_the_likeliest_lane() -> None:
    model = StochasticMemoryArrayLSTM(3, 4, K, sample_lanes=True, dtype=DOUBLE).eval()
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert_matches_reference(model, x, memory_step(model), zeros_initial(x, 4, (K, 4)))


@pytest.mark.parametrize("sample_lanes", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_memory_with_one_lane_is_the_lstm(mode: str, sample_lanes: bool) -> None:
    memory = StochasticMemoryArrayLSTM(
        3, 4, 1, sample_lanes=sample_lanes, num_layers=2, bidirectional=True, dtype=DOUBLE
    )
    plain = LSTM(3, 4, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(memory.state_dict())
    memory.train(mode == "train")
    plain.train(mode == "train")
    x = torch.randn(2, 6, 3, dtype=DOUBLE)
    close(memory(x), plain(x))  # 1e-12, as for ArrayLSTM with k = 1 (rounding only)


def test_memory_draws_the_written_lane_from_the_softmax_of_input_gates() -> None:
    torch.manual_seed(0)
    lanes, size, draws = 3, 4, 20000
    gates = torch.randn(1, lanes * 4 * size, dtype=DOUBLE).expand(draws, -1)
    state = torch.randn(lanes, 1, size, dtype=DOUBLE).expand(-1, draws, -1)
    outputs, new_state = stochastic_memory_lanes(gates, state, sample=True)
    blocks = gates[0].view(lanes, 4, size)  # (k, 4, H): f, i, o, g
    written = torch.sigmoid(blocks[:, 0]) * state[:, 0] + torch.sigmoid(blocks[:, 1]) * torch.tanh(
        blocks[:, 3]
    )  # (k, H): every lane's candidate write
    close(outputs[:, 0], torch.sigmoid(blocks[:, 2]))
    changed = new_state != state  # (k, draws, H)
    # Exactly one lane per unit is written, to its update; the others are bitwise unchanged.
    assert torch.equal(changed.sum(0), torch.ones(draws, size, dtype=torch.long))
    assert torch.equal(torch.where(changed, new_state, state), new_state)
    assert torch.equal(new_state[changed], written.unsqueeze(1).expand(-1, draws, -1)[changed])
    frequencies = changed.double().mean(dim=1)  # (k, H)
    expected = torch.softmax(blocks[:, 1], dim=0)
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.02)


def test_memory_default_is_deterministic_in_training_and_sample_lanes_draws() -> None:
    x = torch.randn(8, 6, 3, dtype=DOUBLE)
    model = StochasticMemoryArrayLSTM(3, 4, K, dtype=DOUBLE).train()
    first = model(x)
    torch.manual_seed(5)
    close(model(x), first, atol=0)
    sampling = StochasticMemoryArrayLSTM(3, 4, K, sample_lanes=True, dtype=DOUBLE).train()
    sampling.load_state_dict(model.state_dict())
    assert not torch.allclose(sampling(x)[0], first[0])
    assert "k=3, sample_lanes=True" in repr(sampling)


def test_memory_draws_alike_on_every_engine() -> None:
    # Same seed, training, sample_lanes=True: the fused engine draws the same lanes as the
    # others, in the same order, and no more (the generator ends in the same state); a
    # second derivative (create_graph) differentiates the lanes drawn, without drawing again.
    options = {"sample_lanes": True, "num_layers": 2, "bidirectional": True, "dtype": DOUBLE}
    model = StochasticMemoryArrayLSTM(3, 4, K, **options).train()
    x = torch.randn(4, 6, 3, dtype=DOUBLE)
    assert model.engine_for(x).name == "fused"
    found = []
    for engine in ("auto", "hoisted", "reference"):
        model.engine = engine
        torch.manual_seed(3)
        given = x.clone().requires_grad_()
        got = results(*model(given, lengths=[6, 2, 5, 1]))
        inputs = [given, *model.parameters()]
        loss = sum((t * t).sum() for t in got)
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in first), inputs)
        found.append((got, first, second, torch.rand(4)))
    model.eval()
    assert not torch.allclose(found[0][0][0], model(x, lengths=[6, 2, 5, 1])[0])  # drawn
    for other in found[1:]:
        close(found[0][:2], other[:2], atol=1e-10)
        close(found[0][2], other[2], atol=1e-8)
        assert torch.equal(found[0][3], other[3])


def test_memory_trains_with_sampled_lanes() -> None:
    model = StochasticMemoryArrayLSTM(3, 4, K, sample_lanes=True).train()
    out, _ = model(torch.randn(2, 5, 3))
    out.sum().backward()
    assert model.i2h.weight.grad is not None
    assert model.i2h.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ update_hidden


def lane_maximum(outputs: list[Tensor], states: list[Tensor]) -> Tensor:
    """A combination other than the sum: per unit, the largest o^j tanh(c^j)."""
    return torch.stack([o * torch.tanh(c) for o, c in zip(outputs, states, strict=True)]).amax(0)


def with_max_combination(cls: type[ArrayLSTM]) -> type[ArrayLSTM]:
    """A subclass of ``cls`` that overrides only update_hidden, as the original's clients do."""

    class MaxLanes(cls):  # type: ignore[valid-type,misc]
        def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
            return (outputs * torch.tanh(states)).amax(0)

    return MaxLanes


@pytest.mark.parametrize("engine", ["auto", "reference"])
@pytest.mark.parametrize(
    "cls", [ArrayLSTM, StochasticArrayLSTM, AttentionArrayLSTM, StochasticMemoryArrayLSTM]
)
def test_an_overridden_update_hidden_combines_the_lanes(cls: type[ArrayLSTM], engine: str) -> None:
    model = with_max_combination(cls)(3, 4, K, num_layers=2, bidirectional=True, dtype=DOUBLE)
    model.engine = engine
    assert model.engine_for(torch.randn(2, 5, 3, dtype=DOUBLE)).name == (
        "compiled" if engine == "auto" else engine
    )
    steps: dict[type[ArrayLSTM], Step] = {
        ArrayLSTM: array_step(model, lane_maximum),
        StochasticArrayLSTM: array_step(model, lane_maximum),
        AttentionArrayLSTM: attention_step(module_weights(model), False, lane_maximum),
        StochasticMemoryArrayLSTM: memory_step(model, lane_maximum),
    }
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, steps[cls], initial, [5, 2, 4, 1])


# ------------------------------------------------------------------ the fused engine
# tests/test_fused.py checks ArrayLSTM's and StochasticArrayLSTM's rules and engine against
# the reference path (argmax lanes); here: what falls back, and lanes drawn at random.


def _twins(cls: type[ArrayLSTM], **options: object) -> tuple[ArrayLSTM, ArrayLSTM]:
    """Two models with the same weights: the engine auto chooses, and the reference path."""
    model = cls(3, 4, K, dtype=DOUBLE, **options)  # type: ignore[arg-type]
    reference = cls(3, 4, K, dtype=DOUBLE, **options)  # type: ignore[arg-type]
    reference.load_state_dict(model.state_dict())
    reference.engine = "reference"
    return model, reference


def _results_and_gradients(model: ArrayLSTM, x: Tensor, lengths: Tensor) -> list[Tensor]:
    given = x.clone().requires_grad_()
    got = results(*model(given, lengths=lengths))
    return [*got, *gradients(got, [given, *model.parameters()])]


@pytest.mark.parametrize("cls", [ArrayLSTM, StochasticArrayLSTM])
def test_an_overridden_update_hidden_runs_hoisted_and_equals_the_reference_path(
    cls: type[ArrayLSTM],
) -> None:
    # The fused rule implements the class's own update_hidden, not an override of it.
    x, lengths = torch.randn(4, 5, 3, dtype=DOUBLE), torch.tensor([5, 2, 4, 1])
    for module in (
        cls(3, 4, K, dtype=DOUBLE),
        type("Unchanged", (cls,), {})(3, 4, K, dtype=DOUBLE),
    ):
        module.engine = "fused"
        assert module.engine_for(x).name == "fused"
    model, reference = _twins(with_max_combination(cls), num_layers=2, bidirectional=True)
    model.engine = "fused"
    engine = model.engine_for(x, lengths)
    assert engine.name == "hoisted"
    assert engine.reason == (
        f"the fused engine does not apply: MaxLanes overrides update_hidden of {cls.__name__}"
    )
    close(_results_and_gradients(model, x, lengths), _results_and_gradients(reference, x, lengths))
    model.engine = "auto"  # the compiled engine traces the override itself
    assert model.engine_for(x, lengths).name == "compiled"
    close(_results_and_gradients(model, x, lengths), _results_and_gradients(reference, x, lengths))


def test_an_update_hidden_set_on_the_instance_runs_hoisted() -> None:
    model = ArrayLSTM(3, 4, K, num_layers=2, dtype=DOUBLE)
    model.update_hidden = lambda outputs, states: (  # type: ignore[method-assign]
        (outputs * torch.tanh(states)).amax(0)
    )
    x = torch.randn(4, 5, 3, dtype=DOUBLE)
    assert model.engine_for(x).name == "compiled"  # traces the instance's function
    initial = zeros_initial(x, 4, (K, 4))
    assert_matches_reference(model, x, array_step(model, lane_maximum), initial, [5, 2, 4, 1])
    model.engine = "fused"
    assert model.engine_for(x) == (
        "hoisted",
        "the fused engine does not apply: update_hidden is set on the ArrayLSTM instance",
    )
    assert_matches_reference(model, x, array_step(model, lane_maximum), initial, [5, 2, 4, 1])
    model.update_hidden = lambda outputs, states: (  # type: ignore[method-assign]
        (outputs * torch.tanh(states)).amin(0)
    )
    model.engine = "auto"  # another function on the instance: traced anew, not the old one
    assert model.engine_for(x).name == "compiled"

    def lane_minimum(outputs: Tensor, states: Tensor) -> Tensor:
        lanes = zip(outputs, states, strict=True)
        return torch.stack([o * torch.tanh(c) for o, c in lanes]).amin(0)

    assert_matches_reference(model, x, array_step(model, lane_minimum), initial, [5, 2, 4, 1])


def test_sampled_lanes_with_a_seed_are_the_reference_paths() -> None:
    # The fused engine draws with the same calls in the same order (layer by layer,
    # direction by direction, step by step), so one seed gives both engines the same lanes.
    model, reference = _twins(
        StochasticArrayLSTM, sample_lanes=True, num_layers=2, bidirectional=True
    )
    x, lengths = torch.randn(4, 6, 3, dtype=DOUBLE), torch.tensor([6, 3, 1, 5])
    assert model.training
    assert model.engine_for(x, lengths).name == "fused"
    found = []
    for module in (model, reference):
        torch.manual_seed(7)
        found.append((_results_and_gradients(module, x, lengths), torch.rand(4)))
    close(found[0], found[1], atol=1e-10)  # the generator is left in the same state too
    torch.manual_seed(7)
    assert not torch.allclose(model.eval()(x, lengths=lengths)[0], found[0][0][0])  # drawn


def test_higher_derivatives_through_sampled_lanes_take_the_lanes_forward_drew() -> None:
    # create_graph=True recomputes the direction with the rule's reference: it must reuse the
    # lanes forward drew, not draw again.
    model, reference = _twins(StochasticArrayLSTM, sample_lanes=True, bidirectional=True)
    x, lengths = torch.randn(3, 5, 3, dtype=DOUBLE), torch.tensor([5, 2, 4])
    found = []
    for module in (model, reference):
        torch.manual_seed(3)
        given = x.clone().requires_grad_()
        out = module(given, lengths=lengths)[0]
        (d_x,) = torch.autograd.grad(out.pow(2).sum(), given, create_graph=True)
        second = torch.autograd.grad(d_x.pow(2).sum(), [given, *module.parameters()])
        found.append((d_x, *second, torch.rand(4)))
    close(found[0], found[1], atol=1e-10)


@pytest.mark.parametrize("cls", [AttentionArrayLSTM, StochasticMemoryArrayLSTM])
def test_an_overridden_update_hidden_leaves_the_fused_engine(cls: type[ArrayLSTM]) -> None:
    # The fused rules sum the lanes; they cannot know another combination.
    x = torch.randn(2, 5, 3)
    model, combined = cls(3, 4, K), with_max_combination(cls)(3, 4, K)
    model.engine = combined.engine = "fused"
    assert model.engine_for(x).name == "fused"
    assert combined.engine_for(x) == (
        "hoisted",
        "the fused engine does not apply: MaxLanes overrides update_hidden",
    )


# ------------------------------------------------------------------ the original's layouts
# The original package kept hidden (1, batch, H) and the lanes' state (k, batch, H) at every
# step: its initHidden made them, its forward_cell took and gave them, its update_hidden
# returned (1, batch, H). Every Array cell here takes them, and answers in the caller's layout.

ARRAY_CELLS = [ArrayLSTM, StochasticArrayLSTM, AttentionArrayLSTM, StochasticMemoryArrayLSTM]


@pytest.mark.parametrize("k", [1, K])
@pytest.mark.parametrize("cls", ARRAY_CELLS)
def test_forward_cell_takes_the_original_step_layout(cls: type[ArrayLSTM], k: int) -> None:
    model = cls(3, 4, k, num_layers=2, bidirectional=True, dtype=DOUBLE)
    x = torch.randn(2, 3, dtype=DOUBLE)
    hidden, state = torch.randn(2, 4, dtype=DOUBLE), torch.randn(k, 2, 4, dtype=DOUBLE)
    for cell in (model, model.layer_cell(0, 1)):
        torch.manual_seed(0)
        want_hidden, want_state = cell.forward_cell(x, hidden, state)
        torch.manual_seed(0)
        got_hidden, got_state = cell.forward_cell(
            x, hidden.unsqueeze(0), state
        )  # (1, B, H), (k, B, H)
        assert got_hidden.shape == (1, 2, 4)
        assert got_state.shape == (k, 2, 4)
        close((got_hidden[0], got_state), (want_hidden, want_state))
        torch.manual_seed(0)
        got_hidden, got_state = cell.forward_cell(x, hidden.unsqueeze(0), state.unsqueeze(0))
        assert got_state.shape == (1, k, 2, 4)  # a leading 1 given is a leading 1 returned
        close((got_hidden[0], got_state[0]), (want_hidden, want_state))


class OriginalArray(ArrayLSTM):
    """As the original's clients wrote one: initHidden and update_hidden in its layout."""

    def initHidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.new_zeros(1, x.shape[0], self.hidden_size), x.new_zeros(
            self.k, x.shape[0], self.hidden_size
        )

    def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        hidden = torch.zeros(1, outputs.shape[1], self.hidden_size, dtype=outputs.dtype)
        for output, state in zip(torch.unbind(outputs), torch.unbind(states), strict=True):
            hidden = hidden + output * state.tanh()
        return hidden  # (1, batch, hidden_size), as the original documents it


@pytest.mark.parametrize("k", [1, K])
@pytest.mark.parametrize("engine", ["auto", "fused", "reference", "hoisted"])
def test_the_original_s_init_hidden_and_update_hidden_run_on_every_engine(
    engine: str, k: int
) -> None:
    model = OriginalArray(3, 4, k, num_layers=2, bidirectional=True, dtype=DOUBLE)
    model.engine = engine
    plain = ArrayLSTM(3, 4, k, num_layers=2, bidirectional=True, dtype=DOUBLE)
    plain.load_state_dict(model.state_dict())
    x, lengths = torch.randn(4, 5, 3, dtype=DOUBLE), torch.tensor([5, 2, 4, 1])
    # The fused rule knows the class's own update_hidden only; the compiled engine traces it.
    expected = {"auto": "compiled", "fused": "hoisted"}.get(engine, engine)
    assert model.engine_for(x).name == expected
    close(_results_and_gradients(model, x, lengths), _results_and_gradients(plain, x, lengths))


def test_an_original_step_loop_matches_forward() -> None:
    model = OriginalArray(3, 4, K, dtype=DOUBLE)
    x = torch.randn(2, 6, 3, dtype=DOUBLE)
    hidden, state = model.initHidden(x)  # (1, 2, 4) and (K, 2, 4), as the original's
    outputs = []
    for t in range(x.shape[1]):
        hidden, state = model.forward_cell(x[:, t], hidden, state)
        outputs.append(hidden)
    expected, (last_hidden, last_state) = model(x)
    close(torch.cat(outputs).transpose(0, 1), expected)
    close((hidden, state), (last_hidden, last_state))


def test_a_wrong_update_hidden_or_state_shape_is_named() -> None:
    class Wrong(ArrayLSTM):
        def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
            return sum_of_lanes(outputs, states).expand(2, -1, -1)

    x = torch.randn(2, 5, 3)
    with pytest.raises(
        lstm.ShapeError,
        match=r"^Wrong\.update_hidden: expected hidden of shape \(2, 4\) or \(1, 2, 4\) "
        r"\(the original implementation's layout\), got \(2, 2, 4\)$",
    ):
        Wrong(3, 4, K)(x)
    with pytest.raises(
        lstm.ShapeError,
        match=r"^ArrayLSTM\.forward_cell: expected state of shape \(k, batch, 4\) or "
        r"\(1, k, batch, 4\) with hidden's \(1, 2, 4\) .*got \(2, 3, 2, 4\)$",
    ):
        ArrayLSTM(3, 4, K).forward_cell(x[:, 0], torch.zeros(1, 2, 4), torch.zeros(2, K, 2, 4))


def sum_of_lanes(outputs: Tensor, states: Tensor) -> Tensor:
    return (outputs * torch.tanh(states)).sum(0)
