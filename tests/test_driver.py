"""Generic tests of the driver, table-driven over every registered cell.

A cell is tested here by adding it to ``lstm.CELLS``. The test-only cells of ``toy_cells``
run beside them (``builders.GENERIC``) so that states shaped (k, batch, hidden) and tuple
states are covered too, and so does the LSTM held on each of its engines. Tolerances:
float64 throughout, 1e-12 for re-orderings of the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from builders import (
    DOUBLE,
    GENERIC_NAMES,
    HIDDEN,
    INPUT,
    LANE_CHOICE,
    build,
    close,
    map_state,
    parts,
    results,
)

LENGTHS = torch.tensor([5, 2, 4, 1])


@pytest.fixture(params=GENERIC_NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_state_shapes(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    out, (hidden, state) = model(torch.randn(6, 5, INPUT, dtype=DOUBLE))
    assert out.shape == (6, 5, 2 * HIDDEN)
    assert hidden.shape == (4, 6, HIDDEN)
    template = model.init_hidden(torch.zeros(6, 5, INPUT, dtype=DOUBLE))[1]
    for part, like in zip(parts(state), parts(template), strict=True):
        lead = like.numel() // (6 * HIDDEN)
        assert part.shape == (4 * lead, 6, HIDDEN)


def test_last_output_is_final_hidden(name: str) -> None:
    model = build(name, num_layers=2)
    out, (hidden, _) = model(torch.randn(3, 5, INPUT, dtype=DOUBLE))
    close(out[:, -1], hidden[-1], atol=0)


def test_chunked_run_with_carried_state_equals_whole_run(name: str) -> None:
    model = build(name, num_layers=2)
    x = torch.randn(3, 7, INPUT, dtype=DOUBLE)
    whole, whole_state = model(x)
    first, carried = model(x[:, :3])
    second, final_state = model(x[:, 3:], carried)
    close(torch.cat([first, second], dim=1), whole)
    close(final_state, whole_state)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_match_truncated_runs(name: str, bidirectional: bool) -> None:
    model = build(name, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    out, (hidden, state) = model(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        alone, (alone_hidden, alone_state) = model(x[b : b + 1, :n])
        close(out[b : b + 1, :n], alone)
        assert torch.count_nonzero(out[b, n:]) == 0  # padded outputs are zero
        close(hidden[:, b : b + 1], alone_hidden)
        close(map_state(state, lambda s, b=b: s[:, b : b + 1]), alone_state)


def test_padding_values_do_not_matter(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE, requires_grad=True)
    noisy = x.detach().clone()
    for b, n in enumerate(LENGTHS.tolist()):
        noisy[b, n:] = 1e3
    out, state = model(x, lengths=LENGTHS)
    close(model(noisy, lengths=LENGTHS), (out, state))
    out.sum().backward()
    assert x.grad is not None
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.count_nonzero(x.grad[b, n:]) == 0


def test_packed_sequence_matches_lengths(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    out, state = model(x, lengths=LENGTHS)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    packed_out, packed_state = model(packed)
    assert isinstance(packed_out, PackedSequence)
    assert torch.equal(packed_out.batch_sizes, packed.batch_sizes)
    assert torch.equal(packed_out.sorted_indices, packed.sorted_indices)
    expected = pack_padded_sequence(out, LENGTHS, batch_first=True, enforce_sorted=False)
    close(packed_out.data, expected.data)
    close(packed_state, state)


def test_batch_first_false_is_the_transpose(name: str) -> None:
    first = build(name, num_layers=2, bidirectional=True)
    second = build(name, num_layers=2, bidirectional=True, batch_first=False)
    second.load_state_dict(first.state_dict())
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    out, state = first(x, lengths=LENGTHS)
    out_t, state_t = second(x.transpose(0, 1), lengths=LENGTHS)
    close(out_t.transpose(0, 1), out, atol=0)
    close(state_t, state, atol=0)


@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_matches_batch_of_one(name: str, batch_first: bool) -> None:
    model = build(name, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(5, INPUT, dtype=DOUBLE)
    out, (hidden, state) = model(x)
    batched = x.unsqueeze(0) if batch_first else x.unsqueeze(1)
    out_b, (hidden_b, state_b) = model(batched)
    close(out, out_b.squeeze(0 if batch_first else 1), atol=0)
    close(hidden, hidden_b.squeeze(1), atol=0)
    close(state, map_state(state_b, lambda s: s.squeeze(1)), atol=0)
    # The unbatched final state feeds back in as an unbatched initial state.
    again, _ = model(x, (hidden, state))
    again_b, _ = model(batched, (hidden_b, state_b))
    close(again, again_b.squeeze(0 if batch_first else 1), atol=0)


def test_non_contiguous_input(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    storage = torch.randn(5, 4, 2 * INPUT, dtype=DOUBLE)
    x = storage[..., ::2].transpose(0, 1)  # (4, 5, INPUT), strided in two dims
    assert not x.is_contiguous()
    # Matrix products over strided memory may round differently: equal to 1e-12, not bitwise.
    close(model(x, lengths=LENGTHS), model(x.contiguous(), lengths=LENGTHS))


def test_given_default_state_equals_default(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    cells = 4
    first_hidden, first_state = model.init_hidden(x)

    def stacked(part: torch.Tensor) -> torch.Tensor:  # every cell starts the same here
        return torch.cat([part.reshape(-1, 4, HIDDEN)] * cells)

    given = (stacked(first_hidden), map_state(first_state, stacked))
    close(model(x, given), model(x), atol=0)


def test_deterministic_bitwise(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True, dtype=torch.float32)
    x = torch.randn(4, 5, INPUT)
    close(model(x, lengths=LENGTHS), model(x, lengths=LENGTHS), atol=0)


def test_gradcheck_and_gradgradcheck(name: str) -> None:
    # The smallest model with every axis the driver differentiates through: two layers
    # (layer 1 reads both directions of layer 0, 4 features), both directions, two lanes
    # where the cell has them, and ragged lengths that are unsorted (packing permutes the
    # batch) and include a single-step sequence. One input feature: the cost of the check
    # grows with the input and weight elements, and a wider input adds no other path.
    model = build(name, 1, 2, k=2, num_layers=2, bidirectional=True)
    x = torch.randn(2, 3, 1, dtype=DOUBLE, requires_grad=True)
    lengths = torch.tensor([1, 3])
    weights = list(model.parameters())[:2]  # input and two weights keep the check quick

    def function(x: torch.Tensor, *_: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return results(*model(x, lengths=lengths))

    inputs = (x, *weights)
    assert torch.autograd.gradcheck(function, inputs)
    # The second derivatives along one random output gradient v, as gradgradcheck's default
    # draws it, but v is not itself differentiated: the Jacobian of the first derivatives
    # with respect to v is J transposed, which gradcheck has just compared in full.
    v = tuple(torch.empty_like(out).uniform_(-1, 1) for out in function(*inputs))
    assert torch.autograd.gradgradcheck(function, inputs, v)


def test_dropout_acts_between_layers_in_training_only(name: str) -> None:
    model = build(name, num_layers=2, dropout=0.5)
    plain = build(name, num_layers=2)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    close(model.eval()(x), plain(x), atol=0)
    model.train()
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(1)
    close(model(x), first, atol=0)  # the same seed gives the same masks
    assert not torch.allclose(first[0], plain(x)[0])
    # Layer 0's final state is computed before any dropout is applied.
    close(first[1][0][0], plain.train()(x)[1][0][0])


def test_layer_cell_view_maps_names_to_that_cell(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    # The module is its own layer 0 forward cell where those names have no suffix (i2h);
    # with nn.LSTM's names (weight_ih_l0) that cell is a view too.
    first = model.layer_cell(0, 0)
    assert (first is model) == (model.cell_suffix(0, 0) == "")
    for part_name, part in model.cell_parts(0, 0).items():
        assert getattr(first, part_name) is part
    view = model.layer_cell(1, 1)
    assert type(view) is type(model)
    for part_name, part in model.cell_parts(1, 1).items():
        assert getattr(view, part_name) is part
        assert getattr(model, part_name) is model.cell_parts(0, 0)[part_name]
    assert len(list(model.parameters())) == len(
        list(model.state_dict())
    )  # views are never registered
    x = torch.randn(2, 2 * HIDDEN, dtype=DOUBLE)
    hidden, state = view.init_hidden(x.unsqueeze(1))
    stepped, _ = view.forward_cell(x, hidden, state)
    assert stepped.shape == (2, HIDDEN)


def test_bf16_autocast_on_cpu(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True, dtype=torch.float32)
    x = torch.randn(4, 5, INPUT)
    expected, _ = model(x, lengths=LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (hidden, _) = model(x, lengths=LENGTHS)
    assert torch.isfinite(out).all()
    assert torch.isfinite(hidden).all()
    if name in LANE_CHOICE:
        # Choosing the likeliest lane is discontinuous: bf16 rounding may pick another lane
        # for a few units. Most units must still agree.
        agree = (out.float() - expected).abs() < 5e-2
        assert agree.float().mean() > 0.9
    else:
        torch.testing.assert_close(out.float(), expected, rtol=0, atol=5e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    expected = model(x, lengths=LENGTHS)
    got = model.cuda()(x.cuda(), lengths=LENGTHS.cuda())
    close(got[0].cpu(), expected[0], atol=1e-10)


def _last_cell(state: Any, like: Any) -> Any:
    """The last layer's (last direction's) part of a stacked final state, shaped like ``like``."""
    if isinstance(state, tuple):
        return tuple(_last_cell(part, template) for part, template in zip(state, like, strict=True))
    lead = like.numel() // (like.shape[-2] * like.shape[-1])
    return state[-lead:].reshape(like.shape)


def test_all_states_are_the_states_after_each_step(name: str) -> None:
    model = build(name, num_layers=2)
    x = torch.randn(3, 5, INPUT, dtype=DOUBLE)
    out, final, all_states = model(x, return_all_states=True)
    close((out, final), model(x))  # the extra output changes nothing else
    like = model.init_hidden(x)[1]
    for t in range(5):
        _, (_, prefix_state) = model(x[:, : t + 1])
        close(map_state(all_states, lambda s, t=t: s[..., t, :]), _last_cell(prefix_state, like))


def test_all_states_with_directions_lengths_and_layouts(name: str) -> None:
    model = build(name, num_layers=2, bidirectional=True)
    x = torch.randn(4, 5, INPUT, dtype=DOUBLE)
    _out, (_, state), all_states = model(x, lengths=LENGTHS, return_all_states=True)
    for part, final in zip(parts(all_states), parts(state), strict=True):
        assert part.shape[-3:] == (4, 5, 2 * HIDDEN)
        lead = part.shape[:-3].numel()
        forward_final = final[-2 * lead : -lead].reshape((*part.shape[:-3], 4, HIDDEN))
        reverse_final = final[-lead:].reshape((*part.shape[:-3], 4, HIDDEN))
        for b, n in enumerate(LENGTHS.tolist()):
            assert torch.count_nonzero(part[..., b, n:, :]) == 0  # zero past each end
            close(part[..., b, n - 1, :HIDDEN], forward_final[..., b, :])  # forward ends at n-1
            close(part[..., b, 0, HIDDEN:], reverse_final[..., b, :])  # reverse ends at 0
    sequence_first = build(name, num_layers=2, bidirectional=True, batch_first=False)
    sequence_first.load_state_dict(model.state_dict())
    *_, transposed = sequence_first(x.transpose(0, 1), lengths=LENGTHS, return_all_states=True)
    close(transposed, map_state(all_states, lambda s: s.transpose(-3, -2)), atol=0)
    *_, single = model(x[0], return_all_states=True)
    *_, batch_of_one = model(x[:1], return_all_states=True)
    close(single, map_state(batch_of_one, lambda s: s.squeeze(-3)), atol=0)


def test_return_all_states_must_be_a_bool() -> None:
    with pytest.raises(
        TypeError, match=r"^LSTM: expected return_all_states to be a bool, got int$"
    ):
        build("lstm")(torch.randn(2, 3, INPUT, dtype=DOUBLE), return_all_states=1)
