r"""The mLSTM of xLSTM (M. Beck et al., *xLSTM: Extended Long Short-Term Memory*,
arXiv:2405.04517, 2024): a matrix memory per head, and gates that read only the input.

Its gates do not read the previous hidden state, so the whole sequence's memory can be
computed without stepping: :func:`mlstm_chunkwise` (the parallel form, used for training and
for whole sequences) and :func:`mlstm_step` (one step, the reference and the form for
generation) compute the same function.
"""

from __future__ import annotations

import contextlib
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm.checks import ShapeError, check_forward_cell, check_int
from lstm.driver import Recurrent
from lstm.engines import FastPath
from lstm.parameters import CellPart, Device, DType
from lstm.state import CellState, takes_original_layout

MLSTMState = tuple[Tensor, Tensor, Tensor]
"""(C, n, m) of one cell: matrix memory ``(batch, heads * d * d)`` (each head's ``d x d``
matrix, row-major), normaliser ``(batch, heads * d)`` and stabiliser ``(batch, heads)``."""

SEGMENT = 8
"""Chunks that :func:`mlstm_chunkwise` computes at once; a longer sequence runs in segments."""

FORGET_BIAS = (3.0, 6.0)
"""Initial forget-gate biases, spread evenly over the heads from the first to the second."""


Blocks = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
"""q, k, v, o, ĩ, f̃: the blocks of one projection (:func:`split_projection`)."""


def split_projection(projection: Tensor, num_heads: int) -> Blocks:
    r"""The blocks of ``i2h``'s output: q, k, v, o (``H`` features each), ĩ, f̃ (one per head).

    Parameters
    ----------
    projection : Tensor of shape (..., 4 * hidden_size + 2 * num_heads)
    num_heads : int

    Returns
    -------
    q, k, v, o : Tensors of shape (..., hidden_size)
        ``k`` is not yet divided by :math:`\sqrt d`.
    gate_i, gate_f : Tensors of shape (..., num_heads)
        Pre-activations of the input and forget gates.

    All in at least float32: under autocast the projection (the large product) comes in
    bfloat16, and the step functions compute the rest in float32 with autocast off (the
    stabiliser, the gates' logarithms, and the read-out, whose denominator
    :math:`|n^\top q|` may come close to zero, would lose too much in 3 significant digits).
    """
    width = projection.shape[-1] - 2 * num_heads
    if width <= 0 or width % 4:
        raise ShapeError(
            f"mLSTM: expected a projection of 4 * hidden_size + 2 * num_heads features "
            f"(num_heads={num_heads}), got {projection.shape[-1]}"
        )
    projection = projection.to(torch.promote_types(projection.dtype, torch.float32))
    size = width // 4
    q, k, v, o, gate_i, gate_f = torch.split(projection, [size] * 4 + [num_heads] * 2, dim=-1)
    return q, k, v, o, gate_i, gate_f


def denominator_floor(stabiliser: Tensor) -> Tensor:
    r""":math:`e^{-m}`, the read-out's floor, kept within the dtype's normal range.

    :math:`m_t \ge \tilde\imath_t`, so an input gate shut hard (:math:`\tilde\imath <
    -88` in float32) makes :math:`e^{-m}` overflow to inf: the output is then 0 (correct:
    the memory's true scale :math:`e^{m}` is below float32's range), but its gradient
    through the floor is :math:`0 \cdot \infty`. One opened hard (:math:`m > 87`) makes it
    underflow to 0, and a read-out with :math:`n^\top q = 0` (a zero query) then 0/0. The
    exponent is therefore clamped to the logarithms of the dtype's smallest normal and its
    largest value less 1 ([-87.3, 87.7] in float32, [-708.4, 708.8] in float64), which
    changes nothing where :math:`e^{-m}` is a normal number.
    """
    info = torch.finfo(stabiliser.dtype)
    exponent = torch.clamp(-stabiliser, min=math.log(info.tiny), max=math.log(info.max) - 1.0)
    return torch.exp(exponent)


def like_state(hidden: Tensor, state: MLSTMState, given: MLSTMState) -> tuple[Tensor, MLSTMState]:
    """Results in the dtype of the state given: computed in at least float32, they go back to
    bfloat16 or float16 for a model in that dtype (under autocast the state is float32)."""
    dtype = given[0].dtype
    return hidden.to(dtype), (state[0].to(dtype), state[1].to(dtype), state[2].to(dtype))


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Autocast off on ``device`` while the step functions compute (a no-op when it is off)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def mlstm_step(
    projection: Tensor, state: MLSTMState, num_heads: int, norm: nn.GroupNorm | None = None
) -> tuple[Tensor, MLSTMState]:
    r"""One mLSTM step from the input's projection: the reference form.

    Per head, with head size :math:`d = H / \text{heads}` and the step's projected input
    :math:`q, k, v` (:math:`k` divided by :math:`\sqrt d`), :math:`\tilde\imath,
    \tilde f` (one scalar each) and :math:`o = \sigma(\tilde o)`:

    .. math::

        m_t &= \max(\log\sigma(\tilde f) + m_{t-1},\ \tilde\imath) \\
        i' &= \exp(\tilde\imath - m_t), \qquad
        f' = \exp(\log\sigma(\tilde f) + m_{t-1} - m_t) \\
        C_t &= f' C_{t-1} + i'\, v k^\top, \qquad n_t = f' n_{t-1} + i' k \\
        h_t &= o \odot \frac{C_t q}{\max(|n_t^\top q|,\ e^{-m_t})}

    :math:`C_t, n_t` are the paper's memory and normaliser divided by :math:`e^{m_t}`, so
    :math:`i', f' \le 1` and nothing overflows; the denominator's floor :math:`e^{-m_t}` is
    the paper's 1 on the same scale, and :math:`h_t` does not depend on :math:`m` at all.
    With ``norm``, the read-out is normalised per head before the output gate, as the
    xLSTM block's mLSTM layer does: :math:`h_t = o \odot \mathrm{GN}(C_t q /
    \max(\cdot))` (:func:`normalise_heads`).

    Parameters
    ----------
    projection : Tensor of shape (batch, 4 * hidden_size + 2 * num_heads)
        ``i2h(x)``: blocks q, k, v, o, then ĩ and f̃ per head (:func:`split_projection`).
    state : tuple (C, n, m)
        ``(batch, heads * d * d)``, ``(batch, hidden_size)``, ``(batch, heads)``.
    num_heads : int
    norm : torch.nn.GroupNorm, optional
        ``num_heads`` groups over ``hidden_size`` features: the per-head norm.

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : tuple (C, n, m), shaped as given
    """
    with full_precision(projection.device):
        blocks = split_projection(projection, num_heads)
        read, new_state = _step(blocks, state)
        hidden = torch.sigmoid(blocks[3]) * normalise_heads(read, norm)
    return like_state(hidden, new_state, state)


def normalise_heads(read: Tensor, norm: nn.GroupNorm | None) -> Tensor:
    r"""The mLSTM's read-out normalised per head (the xLSTM block's norm), or as it is.

    Each head's :math:`d` features of :math:`r` are normalised to mean 0 and variance 1
    (:math:`\epsilon` = ``norm.eps``), then scaled and shifted per feature by ``norm``'s
    weight and bias: ``F.group_norm`` with one group per head, in ``read``'s dtype (at least
    float32, as the rest of the step).

    Parameters
    ----------
    read : Tensor of shape (..., hidden_size)
    norm : torch.nn.GroupNorm or None
        ``num_heads`` groups of ``hidden_size`` channels; None returns ``read``.

    Returns
    -------
    Tensor of the shape of ``read``
    """
    if norm is None:
        return read
    weight = None if norm.weight is None else norm.weight.to(read.dtype)
    bias = None if norm.bias is None else norm.bias.to(read.dtype)
    flat = read.reshape(-1, read.shape[-1])
    return F.group_norm(flat, norm.num_groups, weight, bias, norm.eps).view_as(read)


def _step(blocks: Blocks, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
    r""":func:`mlstm_step` on the blocks of the projection, before the output gate: the
    read-out :math:`C_t q / \max(|n_t^\top q|, e^{-m_t})` and the new state."""
    q, k, v, _, gate_i, gate_f = blocks
    num_heads = gate_i.shape[-1]
    batch, width = q.shape
    size = width // num_heads
    memory, normaliser, stabiliser = state
    q, v = q.view(batch, num_heads, size), v.view(batch, num_heads, size)
    k = k.view(batch, num_heads, size) / math.sqrt(size)
    log_forget = F.logsigmoid(gate_f) + stabiliser
    new_stabiliser = torch.maximum(log_forget, gate_i)  # (B, heads)
    forget = torch.exp(log_forget - new_stabiliser).unsqueeze(-1)
    write = torch.exp(gate_i - new_stabiliser).unsqueeze(-1)
    memory = memory.view(batch, num_heads, size, size)
    memory = forget.unsqueeze(-1) * memory + (write * v).unsqueeze(-1) * k.unsqueeze(-2)
    normaliser = forget * normaliser.view(batch, num_heads, size) + write * k
    numerator = (memory @ q.unsqueeze(-1)).squeeze(-1)  # (B, heads, d)
    denominator = (normaliser * q).sum(-1).abs()  # (B, heads)
    scale = torch.maximum(denominator, denominator_floor(new_stabiliser)).unsqueeze(-1)
    read = (numerator / scale).reshape(batch, width)
    flat = (
        memory.reshape(batch, num_heads * size * size),
        normaliser.reshape(batch, width),
        new_stabiliser,
    )
    return read, flat


def mlstm_chunkwise(
    projection: Tensor,
    state: MLSTMState,
    num_heads: int,
    chunk_size: int,
    running: Tensor | None = None,
    norm: nn.GroupNorm | None = None,
) -> tuple[Tensor, MLSTMState]:
    r"""Every step of a sequence at once, chunk by chunk: the parallel form of :func:`mlstm_step`.

    Within a chunk of :math:`L` steps starting from the state :math:`(C_0, n_0, m_0)`, with
    :math:`b_t = \sum_{r \le t} \log\sigma(\tilde f_r)` (the chunk's cumulative log forget
    gate), the log-weight of step :math:`s`'s write as seen at step :math:`t \ge s` is
    :math:`D_{ts} = b_t - b_s + \tilde\imath_s`, and that of the carried memory is
    :math:`g_t = b_t + m_0`. Unrolling :func:`mlstm_step`'s recursion gives

    .. math::

        m_t &= \max(g_t,\ \max_{s \le t} D_{ts}) \\
        S_{ts} &= (q_t^\top k_s)\, e^{D_{ts} - m_t}, \qquad w_t = e^{g_t - m_t} \\
        C_t q_t &= \sum_{s \le t} S_{ts}\, v_s + w_t\, C_0 q_t, \qquad
        n_t^\top q_t = \sum_{s \le t} S_{ts} + w_t\, n_0^\top q_t

    and :math:`h_t` as in :func:`mlstm_step`; the state at the chunk's end is
    :math:`C_L = \sum_s e^{D_{Ls} - m_L} v_s k_s^\top + w_L C_0` (likewise :math:`n_L`). The
    :math:`L \times L` matrices are quadratic inside a chunk; the chunks are recurrent, so
    time and memory grow linearly with the sequence. Every chunk's own products are
    computed at once (up to :data:`SEGMENT` chunks; a longer sequence runs in segments), and
    only the state entering each chunk is carried from one to the next: with
    :math:`\mu_c = \max_s D_{Ls}`, :math:`m_c = \max(b_L + m_{c-1}, \mu_c)` and
    :math:`C_c = e^{b_L + m_{c-1} - m_c} C_{c-1} + e^{\mu_c - m_c} \sum_s
    e^{D_{Ls} - \mu_c} v_s k_s^\top`.

    A step where ``running`` is False leaves the state as it is (:math:`\tilde\imath =
    -\infty`, :math:`\log\sigma(\tilde f) = 0`): sequences that ended keep their final state,
    and sequences that start late (a reversed ragged batch) keep their initial one. Its
    output is not meaningful: the caller zeroes it.

    Parameters
    ----------
    projection : Tensor of shape (batch, seq_len, 4 * hidden_size + 2 * num_heads)
        ``i2h`` of every step (:func:`split_projection`).
    state : tuple (C, n, m)
        The state before the first step, as :func:`mlstm_step` takes it.
    num_heads : int
    chunk_size : int
        The most steps per chunk; the chunks of a segment are made equal in length.
    running : Tensor of shape (batch, seq_len), bool, optional
        Which steps are real; None when all are.
    norm : torch.nn.GroupNorm, optional
        The per-head norm of the read-out, as :func:`mlstm_step` takes it.

    Returns
    -------
    hidden : Tensor of shape (batch, seq_len, hidden_size)
    state : tuple (C, n, m) after the last step
    """
    with full_precision(projection.device):
        blocks = split_projection(projection, num_heads)
        read, new_state = _chunkwise(blocks, state, chunk_size, running)
        hidden = torch.sigmoid(blocks[3]) * normalise_heads(read, norm)
    return like_state(hidden, new_state, state)


def _chunkwise(
    blocks: Blocks, state: MLSTMState, chunk_size: int, running: Tensor | None
) -> tuple[Tensor, MLSTMState]:
    """:func:`mlstm_chunkwise` on the blocks of the projection, :data:`SEGMENT` chunks at a time.

    Longer sequences run segment by segment with the state carried, so that the
    ``(B, heads, chunks, L, L)`` tensors of one segment stay small enough for the caches
    (measured: a training step of 4096 steps in one segment took 1.8x the time in eight).
    """
    span = SEGMENT * chunk_size
    if blocks[0].shape[1] <= span:
        return _segment(blocks, state, chunk_size, running)
    pieces = [torch.split(part, span, dim=1) for part in blocks]
    masks = [None] * len(pieces[0]) if running is None else torch.split(running, span, dim=1)
    outputs = []
    for index, mask in enumerate(masks):
        blocks = cast(Blocks, tuple(piece[index] for piece in pieces))
        out, state = _segment(blocks, state, chunk_size, mask)
        outputs.append(out)
    return torch.cat(outputs, dim=1), state


def _segment(
    blocks: Blocks, state: MLSTMState, chunk_size: int, running: Tensor | None
) -> tuple[Tensor, MLSTMState]:
    """Every chunk's own part at once, as tensors ``(B, heads, chunks, L, ...)``; only the
    state entering each chunk is carried from chunk to chunk, with ``d x d`` operations.
    Returns the read-out before the output gate, and the state after the segment."""
    q, k, v, _, gate_i, gate_f = blocks
    num_heads = gate_i.shape[-1]
    batch, steps, width = q.shape
    size = width // num_heads
    log_forget = F.logsigmoid(gate_f)
    if running is not None:
        real = running.unsqueeze(-1)
        log_forget = torch.where(real, log_forget, 0.0)
        gate_i = torch.where(real, gate_i, -math.inf)
    chunks = -(-steps // chunk_size)
    chunk_size = -(-steps // chunks)  # equal chunks: 100 steps at most 64 run as 2 x 50
    pad = chunks * chunk_size - steps  # fewer than `chunks`; padded steps change nothing

    def split(part: Tensor, fill: float = 0.0) -> Tensor:
        """(B, T, heads * e), padded with ``fill``, as (B, heads, chunks, L, e)."""
        part = F.pad(part, (0, 0, 0, pad), value=fill) if pad else part
        features = part.shape[-1] // num_heads
        part = part.reshape(batch, chunks, chunk_size, num_heads, features)
        return part.permute(0, 3, 1, 2, 4)

    # contiguous: a product of two permuted views copies both, every time (3.4x slower)
    q, v = split(q).contiguous(), split(v).contiguous()
    k = split(k).contiguous() / math.sqrt(size)
    log_forget = split(log_forget).squeeze(-1)  # (B, heads, n, L)
    gate_i = split(gate_i, -math.inf).squeeze(-1)
    cumulative = log_forget.cumsum(-1)  # b_t within each chunk
    log_weights = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2) + gate_i.unsqueeze(-2)
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    # D_ts for s <= t. (max_{s<=t} D_ts is also b_t + cummax_s(ĩ_s - b_s), which saves two
    # L x L passes, 2 % of a step in a paired A/B; but ONNX has no cummax, and this exports.)
    log_weights = log_weights.masked_fill(~causal, -math.inf)
    memory, normaliser, stabiliser, last_memory, last_normaliser = _carry(
        k, v, cumulative, log_weights[..., -1, :], state
    )
    carried = cumulative + stabiliser[..., :-1].unsqueeze(-1)  # g_t
    new_stabiliser = torch.maximum(carried, log_weights.amax(-1))  # m_t
    scores = (q @ k.transpose(-1, -2)) * torch.exp(log_weights - new_stabiliser.unsqueeze(-1))
    keep = torch.exp(carried - new_stabiliser).unsqueeze(-1)  # w_t
    numerator = scores @ v + keep * (q @ memory.transpose(-1, -2))
    denominator = scores.sum(-1, keepdim=True) + keep * (q @ normaliser.unsqueeze(-1))
    floor = denominator_floor(new_stabiliser).unsqueeze(-1)
    out = numerator / torch.maximum(denominator.abs(), floor)  # (B, heads, n, L, d)
    hidden = out.permute(0, 2, 3, 1, 4).reshape(batch, chunks * chunk_size, width)
    hidden = hidden[:, :steps] if pad else hidden
    flat = (
        last_memory.reshape(batch, num_heads * size * size),
        last_normaliser.reshape(batch, width),
        stabiliser[..., -1],
    )
    return hidden, flat


def _carry(
    k: Tensor, v: Tensor, cumulative: Tensor, at_end: Tensor, state: MLSTMState
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The state entering every chunk, and after the last: C and n entering each chunk
    (``chunks`` along dim 2), m entering each and after the last (``chunks + 1``), and C and
    n after the last chunk.

    Chunk :math:`c`'s own writes, seen at its end, are summed once with a local stabiliser
    :math:`\mu_c = \max_s D_{Ls}` (``at_end`` holds :math:`D_{Ls}`); then from chunk to chunk,
    with :math:`B_c = b_L` its total log forget gate:
    :math:`m_c = \max(B_c + m_{c-1}, \mu_c)`,
    :math:`C_c = e^{B_c + m_{c-1} - m_c} C_{c-1} + e^{\mu_c - m_c} \sum_s e^{D_{Ls} - \mu_c}
    v_s k_s^\top` (likewise :math:`n_c`). A chunk of padded steps only has
    :math:`\mu_c = -\infty`, which adds nothing.
    """
    batch, heads, _, _, size = k.shape
    local = at_end.amax(-1)  # mu_c, (B, heads, n)
    finite = torch.where(torch.isfinite(local), local, 0.0)
    weights = torch.exp(at_end - finite.unsqueeze(-1)).unsqueeze(-1)  # (B, heads, n, L, 1)
    writes = (v * weights).transpose(-1, -2) @ k  # (B, heads, n, d, d)
    key_sums = (k * weights).sum(-2)  # (B, heads, n, d)
    memory, normaliser, stabiliser = state
    # in the chunk math's dtype: a bfloat16 or float16 model's state is computed in float32
    memories = [memory.view(batch, heads, size, size).to(k.dtype)]
    normalisers = [normaliser.view(batch, heads, size).to(k.dtype)]
    stabilisers = [stabiliser]
    # unbind, not [:, :, c]: one backward node, not a full-size zero gradient per chunk
    every = zip(
        cumulative[..., -1].unbind(2),
        local.unbind(2),
        writes.unbind(2),
        key_sums.unbind(2),
        strict=True,
    )
    for total, mu, write, key_sum in every:  # B_c, mu_c, and the chunk's own sums
        decayed = total + stabilisers[-1]
        new = torch.maximum(decayed, mu)
        old_scale = torch.exp(decayed - new).unsqueeze(-1)
        write_scale = torch.exp(mu - new).unsqueeze(-1)
        normalisers.append(old_scale * normalisers[-1] + write_scale * key_sum)
        old_scale, write_scale = old_scale.unsqueeze(-1), write_scale.unsqueeze(-1)
        memories.append(old_scale * memories[-1] + write_scale * write)
        stabilisers.append(new)
    # the entering states stacked apart from the last: a slice of one stack is copied by
    # every product that reads it (5.4 ms against 1.7 for one (8, 4, 8, 64, 64) product here)
    return (
        torch.stack(memories[:-1], dim=2),
        torch.stack(normalisers[:-1], dim=2),
        torch.stack(stabilisers, dim=-1),
        memories[-1],
        normalisers[-1],
    )


class MLSTM(Recurrent):
    r"""mLSTM (Beck et al. 2024): a matrix memory per head, trained in parallel over time.

    See :func:`mlstm_step` for the equations. One ``i2h`` (``nn.Linear(input_size,
    4 * hidden_size + 2 * num_heads)``, blocks q, k, v, o, then the input and forget gates'
    pre-activations, one per head) and no hidden-to-hidden map: the gates read only the
    input. For a whole sequence the engine runs :func:`mlstm_chunkwise` (``engine_for``
    names it ``parallel``); a one-step call, or ``engine="reference"``, runs
    :meth:`forward_cell` step by step. Both are the same function (tested to 1e-8 in float64).

    Parameters
    ----------
    input_size, hidden_size : int
        ``hidden_size`` must be a multiple of ``num_heads``.
    num_layers, bias, batch_first, dropout, bidirectional, device, dtype
        As for every cell (:class:`~lstm.driver.Recurrent`), positionally in
        ``torch.nn.LSTM``'s order too.
    num_heads : int, default 4
        Heads, each with a ``d x d`` memory, ``d = hidden_size / num_heads``.
    head_norm : bool, default False
        Normalise the read-out per head before the output gate (``norm``, a
        ``GroupNorm(num_heads, hidden_size)`` per layer and direction), as the mLSTM layer of
        the xLSTM block does: :func:`normalise_heads`. The bare cell's read-out
        :math:`C q / \max(|n^\top q|, e^{-m})` has no bound.
    chunk_size : int, default 64
        The most steps per chunk of the parallel form: its time is quadratic in the chunk's
        length inside a chunk and linear in the number of chunks (BENCHMARKS.md has the
        measurements). A sequence of ``T`` steps runs in ``ceil(T / chunk_size)`` chunks of
        equal length (100 steps: two of 50).
    recurrent_dropout, zoneout : float, default 0.0
        Taken for the driver's contract, refused unless 0 (``ValueError``): the cell reads
        no hidden state, and zoning out the memory and its stabiliser separately would mix
        their scales.

    Notes
    -----
    The state of one cell is the tuple ``(C, n, m)``: ``C`` is ``(batch, num_heads * d *
    d)``, each head's ``d x d`` matrix flattened row-major (``C.view(batch, num_heads, d,
    d)``), ``n`` is ``(batch, hidden_size)``, ``m`` is ``(batch, num_heads)``. Flat, every
    part keeps the driver's contract (batch at dimension -2), so ``forward`` returns them
    stacked per layer and direction as for every other cell. The stabiliser starts at
    :math:`m_0 = 0` with :math:`C_0 = n_0 = 0`: the hidden output does not depend on
    :math:`m_0` when the memory is empty, and a finite start keeps states that are saved or
    exported free of infinities. The forget gates' biases start spread from 3 to 6 over the
    heads (:data:`FORGET_BIAS`: memories of about 20 to 400 steps); everything else as
    ``nn.Linear`` initialises it.

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.MLSTM(8, 16, num_heads=2)
    >>> out, (hidden, (C, n, m)) = model(torch.randn(3, 5, 8))
    >>> out.shape
    torch.Size([3, 5, 16])
    >>> [tuple(part.shape) for part in (hidden, C, n, m)]
    [(1, 3, 16), (1, 3, 128), (1, 3, 16), (1, 3, 2)]
    >>> model.engine_for(torch.randn(3, 5, 8)).name
    'parallel'
    """

    i2h: nn.Linear

    fast_path = FastPath("parallel", "the chunkwise-parallel form over time (mlstm_chunkwise)")
    """Whole sequences run :meth:`parallel_direction`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        num_heads: int = 4,
        chunk_size: int = 64,
        head_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        owner = type(self).__name__
        self.num_heads = check_int(owner, "num_heads", num_heads, 1)  # build_cell reads it
        self.chunk_size = check_int(owner, "chunk_size", chunk_size, 1)
        if not isinstance(head_norm, bool):
            raise TypeError(f"{owner}: expected head_norm to be a bool, got {head_norm!r}")
        self.head_norm = head_norm  # build_cell reads it
        super().__init__(  # checks every option
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            device=device,
            dtype=dtype,
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"{owner}: expected hidden_size to be a multiple of num_heads={self.num_heads}, "
                f"got {self.hidden_size}"
            )
        if head_norm and self.hidden_size // self.num_heads < 2:
            raise ValueError(
                f"{owner}: expected at least 2 features per head for head_norm=True (a norm of "
                f"one feature is constant), got hidden_size / num_heads = "
                f"{self.hidden_size // self.num_heads}"
            )
        for name in ("recurrent_dropout", "zoneout"):
            if getattr(self, name) > 0:
                raise ValueError(
                    f"{owner}: expected {name}=0.0 (the mLSTM reads no hidden state and its "
                    f"stabilised memory cannot be zoned out part by part), "
                    f"got {getattr(self, name)}"
                )

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """``i2h``: Linear(input_size, 4 * hidden_size + 2 * num_heads); no ``h2h``; with
        ``head_norm``, ``norm``: GroupNorm(num_heads, hidden_size) (weight 1; bias 0 unless
        ``bias=False``)."""
        width = 4 * hidden_size + 2 * self.num_heads
        i2h = nn.Linear(input_size, width, bias=self.bias, device=device, dtype=dtype)
        self._init_forget_bias(i2h)
        parts: dict[str, CellPart] = {"i2h": i2h}
        if self.head_norm:
            parts["norm"] = nn.GroupNorm(
                self.num_heads, hidden_size, bias=self.bias, device=device, dtype=dtype
            )
        return parts

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation, then the forget biases of :data:`FORGET_BIAS`."""
        super().reset_parameters()
        for index in self.cell_indices():
            i2h = self.cell_parts(*index)["i2h"]
            if isinstance(i2h, nn.Linear):
                self._init_forget_bias(i2h)

    def _init_forget_bias(self, i2h: nn.Linear) -> None:
        if i2h.bias is not None:
            with torch.no_grad():
                low, high = FORGET_BIAS
                i2h.bias[-self.num_heads :] = torch.linspace(low, high, self.num_heads)

    @property
    def head_size(self) -> int:
        """``d = hidden_size / num_heads``: each head's memory is ``d x d``."""
        return self.hidden_size // self.num_heads

    @takes_original_layout
    def forward_cell(
        self, x: Tensor, hidden: Tensor, state: MLSTMState
    ) -> tuple[Tensor, MLSTMState]:
        """One step (:func:`mlstm_step`); ``hidden`` is not read (the gates see only ``x``)."""
        size = self.head_size
        check_forward_cell(
            self,
            x,
            hidden,
            state,
            parts=3,
            widths=(self.num_heads * size * size, None, self.num_heads),
        )
        return mlstm_step(self.i2h(x), state, self.num_heads, self._norm())

    def parallel_direction(
        self, layer_input: Tensor, initial: CellState, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, CellState]:
        """One direction of one layer by :func:`mlstm_chunkwise` (the ``parallel`` engine).

        Parameters
        ----------
        layer_input : Tensor of shape (batch, seq_len, features)
        initial : (hidden, (C, n, m))
        mask : Tensor of shape (seq_len, batch, 1), bool, or None
            Which sequences are still running at each step; None when all run to the end.
        reverse : bool
            Run from the last step to the first (each sequence from its own end).

        Returns
        -------
        outputs : Tensor of shape (batch, seq_len, hidden_size)
            Zero past each sequence's end.
        (hidden, state) : the final state, taken at each sequence's end.
        """
        memory, normaliser, stabiliser = initial[1]
        running = None if mask is None else mask.squeeze(-1).transpose(0, 1)  # (B, T)
        if reverse:
            layer_input = layer_input.flip(1)
            running = None if running is None else running.flip(1)
        projection = self.i2h(layer_input)
        outputs, state = mlstm_chunkwise(
            projection,
            (memory, normaliser, stabiliser),
            self.num_heads,
            self.chunk_size,
            running,
            self._norm(),
        )
        if running is None or reverse:  # the last step processed is real for every sequence
            final = outputs[:, -1]
        else:
            last = running.sum(1) - 1  # (B,): each sequence's last real step
            final = outputs[torch.arange(outputs.shape[0], device=outputs.device), last]
        if running is not None:
            outputs = torch.where(running.unsqueeze(-1), outputs, 0.0)
        if reverse:
            outputs = outputs.flip(1)
        return outputs, (final, state)

    def _norm(self) -> nn.GroupNorm | None:
        """The stepped cell's per-head norm, or None without ``head_norm``."""
        norm = self._modules.get("norm")
        return norm if isinstance(norm, nn.GroupNorm) else None

    def init_hidden(self, x: Tensor) -> tuple[Tensor, MLSTMState]:
        """Zeros: hidden (batch, H), C (batch, heads * d * d), n (batch, H), m (batch, heads)."""
        batch, size = x.shape[0], self.head_size
        memory = x.new_zeros(batch, self.num_heads * size * size)
        zeros = x.new_zeros(batch, self.hidden_size)
        return zeros, (memory, zeros.clone(), x.new_zeros(batch, self.num_heads))

    def extra_repr(self) -> str:
        norm = ", head_norm=True" if self.head_norm else ""
        return (
            super().extra_repr()
            + f", num_heads={self.num_heads}, chunk_size={self.chunk_size}{norm}"
        )
