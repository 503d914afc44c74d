r"""The Array-LSTM family (K. Rocki, *Recurrent Memory Array Structures*, arXiv:1607.03085,
2016): k memory cells ("lanes") per hidden unit.

Row layout of ``i2h`` and ``h2h`` (``4 * hidden_size * k`` rows): grouped by lane, lane ``j``
owning rows ``[4Hj, 4H(j + 1))``, each lane's block laid out f, i, o, g as in
:class:`lstm.LSTM`. This is the original implementation's layout, so its checkpoints load
unchanged, and a client recovers ``k`` as ``i2h.weight.shape[0] // (4 * hidden_size)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from lstm.cells.lstm import LSTM
from lstm.checks import ShapeError, check_bool, check_forward_cell, check_int, shape_str
from lstm.engines import FastPath, plain_linear_problem
from lstm.fused import StepRule, Tensors
from lstm.parameters import CellPart, Device, DType, cell_suffix, linear_maps
from lstm.state import takes_original_layout

if TYPE_CHECKING:
    from lstm.driver import Recurrent


def _lane_blocks(gates: Tensor, lanes: int) -> Tensor:
    """Lane-major ``(batch, k * 4 * hidden_size)`` pre-activations as ``(k, batch, 4H)``."""
    # Sizes spelled out, not -1: an empty batch leaves -1 undetermined.
    return gates.view(gates.shape[0], lanes, gates.shape[1] // lanes).transpose(0, 1)


def array_lstm_lanes(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    r"""Every lane's output gate and new cell state, as the original implementation computes them.

    For every lane :math:`j = 1..k`, with pre-activations :math:`a^j` laid out f, i, o, g:

    .. math::

        o^j_t = \sigma(a^j_o), \qquad
        c^j_t = \sigma(a^j_f) \odot c^j_{t-1} + \sigma(a^j_i) \odot \tanh(a^j_g)

    These are the ``outputs`` and ``states`` that :meth:`ArrayLSTM.update_hidden` combines
    into the hidden output.

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations ``i2h(x) + h2h(h)``.
    state : Tensor of shape (k, batch, hidden_size)
        The k cell states.

    Returns
    -------
    outputs : Tensor of shape (k, batch, hidden_size)
        The lanes' output gates :math:`o^j_t`.
    state : Tensor of shape (k, batch, hidden_size)
        The new cell states :math:`c^j_t`.
    """
    size = state.shape[-1]
    per_lane = _lane_blocks(gates, state.shape[0])  # (k, B, 4H)
    forget, input_gate, output = torch.sigmoid(per_lane[..., : 3 * size]).chunk(3, dim=-1)
    state = forget * state + input_gate * torch.tanh(per_lane[..., 3 * size :])
    return output, state


def sum_lanes(outputs: Tensor, states: Tensor) -> Tensor:
    r"""The lanes' outputs summed: :math:`h_t = \sum_j o^j_t \odot \tanh(c^j_t)`.

    As the original implementation computes it (its ``ArrayLSTM.update_hidden``).

    Parameters
    ----------
    outputs : Tensor of shape (k, batch, hidden_size)
        Every lane's output gate.
    states : Tensor of shape (k, batch, hidden_size)
        Every lane's new cell state.

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    """
    return (outputs * torch.tanh(states)).sum(0)


def array_lstm_pointwise(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    r"""The element-wise part of one Array-LSTM step, as the original implementation computes it.

    For every lane :math:`j = 1..k`, with pre-activations :math:`a^j` laid out f, i, o, g:

    .. math::

        c^j_t = \sigma(a^j_f) \odot c^j_{t-1} + \sigma(a^j_i) \odot \tanh(a^j_g), \qquad
        h_t = \sum_j \sigma(a^j_o) \odot \tanh(c^j_t)

    That is :func:`array_lstm_lanes` followed by :func:`sum_lanes`.

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations ``i2h(x) + h2h(h)``.
    state : Tensor of shape (k, batch, hidden_size)
        The k cell states.

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor of shape (k, batch, hidden_size)
    """
    outputs, state = array_lstm_lanes(gates, state)
    return sum_lanes(outputs, state), state


# Autograd's own kernels for the gradients through sigmoid and tanh, from their outputs y:
# grad * y * (1 - y) and grad * (1 - y * y), each in one pass (``.grad_input``: into a tensor).
_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


def _lanes_step(gates: Tensor, state: Tensor) -> tuple[Tensor, Tensors]:
    r""":func:`array_lstm_lanes` for the fused rules: ``(new_state, lanes)``.

    ``lanes`` is what :func:`_lanes_backward` needs: ``(gated, candidate, forget,
    input_gate, output)``, where ``gated`` ``(k, batch, 3, H)`` holds the sigmoids of every
    lane's f, i, o blocks (one sigmoid for all of them; in memory batch first, as the gates),
    ``forget``, ``input_gate`` and ``output`` are its ``(k, batch, H)`` views, and
    ``candidate`` ``(k, batch, H)`` is :math:`\tanh(a^j_g)`.
    """
    lanes, batch, size = state.shape
    blocks = gates.view(batch, lanes, 4, size).transpose(0, 1)  # sizes spelled out: batch 0
    gated = torch.sigmoid(blocks[:, :, :3])
    candidate = torch.tanh(blocks[:, :, 3])
    forget, input_gate, output = gated.unbind(2)
    new_state = torch.addcmul(forget * state, input_gate, candidate)
    return new_state, (gated, candidate, forget, input_gate, output)


def _lanes_backward(
    lanes: Tensors, state: Tensor, d_new_state: Tensor, write_d_output: Callable[[Tensor], Any]
) -> tuple[Tensor, Tensor]:
    """The backward of :func:`_lanes_step`: ``(d_gates (batch, k * 4H), d_state_before)``.

    ``d_new_state`` ``(k, batch, H)`` is the whole gradient of the new cell states (the
    hidden output's share included); ``write_d_output`` writes that of the output gates
    into the ``(k, batch, H)`` view it is given. The equations are :class:`ArrayRule`'s.
    """
    gated, candidate, forget, input_gate, _ = lanes
    count, batch, size = state.shape
    d_gates = d_new_state.new_empty(batch, count, 4, size)
    blocks = d_gates.transpose(0, 1)  # (k, B, 4, H)
    d_forget, d_input, d_output, d_candidate = blocks.unbind(2)
    torch.mul(d_new_state, state, out=d_forget)
    torch.mul(d_new_state, candidate, out=d_input)
    write_d_output(d_output)
    d_gated = blocks[:, :, :3]
    _sigmoid_backward.grad_input(d_gated, gated, grad_input=d_gated)  # f, i and o at once
    _tanh_backward.grad_input(d_new_state * input_gate, candidate, grad_input=d_candidate)
    return d_gates.view(batch, count * 4 * size), d_new_state * forget


class ArrayRule(StepRule):
    r""":func:`array_lstm_pointwise` for the fused engine, with its backward by hand.

    Forward, for every lane :math:`j` (one sigmoid over the f, i, o blocks of all lanes):

    .. math::

        f^j, i^j, o^j = \sigma(a^j_f), \sigma(a^j_i), \sigma(a^j_o), \quad
        g^j = \tanh(a^j_g), \quad
        c^j_t = f^j \odot c^j_{t-1} + i^j \odot g^j, \quad
        \tau^j = \tanh(c^j_t), \quad h_t = \textstyle\sum_j o^j \odot \tau^j

    Backward, with incoming gradients :math:`\bar h` of :math:`h_t` and :math:`\bar c^j` of
    :math:`c^j_t`:

    .. math::

        \bar c'^j &= \bar c^j + \bar h \odot o^j \odot (1 - (\tau^j)^2), \quad
        \bar c^j_{t-1} = \bar c'^j \odot f^j \\
        \bar a^j_f &= \bar c'^j \odot c^j_{t-1} \odot f^j (1 - f^j), \quad
        \bar a^j_i = \bar c'^j \odot g^j \odot i^j (1 - i^j) \\
        \bar a^j_o &= \bar h \odot \tau^j \odot o^j (1 - o^j), \quad
        \bar a^j_g = \bar c'^j \odot i^j \odot (1 - (g^j)^2)

    It implements :meth:`ArrayLSTM.update_hidden` as :class:`ArrayLSTM` defines it
    (:func:`sum_lanes`); :meth:`ArrayLSTM.fused_problem` keeps a subclass that overrides it
    off the fused engine.
    """

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), (c_{t-1}, tanh c_t, *lanes))`` (:func:`_lanes_step`)."""
        (cell_state,) = state
        new_state, lanes = _lanes_step(gates, cell_state)
        squashed = torch.tanh(new_state)
        hidden = (lanes[4] * squashed).sum(0)
        return hidden, (new_state,), (cell_state, squashed, *lanes)

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        cell_state, squashed, lanes = saved[0], saved[1], saved[2:]
        # d_hidden (B, H) broadcasts over the lanes (k, B, H): every lane's share.
        d_new_state = _tanh_backward(d_hidden * lanes[4], squashed).add_(d_state[0])
        d_gates, d_before = _lanes_backward(
            lanes,
            cell_state,
            d_new_state,
            lambda d_output: torch.mul(d_hidden, squashed, out=d_output),
        )
        return d_gates, (d_before,), ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`array_lstm_pointwise`."""
        hidden, new_state = array_lstm_pointwise(gates, state[0])
        return hidden, (new_state,)


class ArrayLSTM(LSTM):
    r"""Array-LSTM: an LSTM with ``k`` memory cells per hidden unit (Rocki 2016).

    Each lane :math:`j` has its own gates and cell state; the hidden output sums the lanes:

    .. math::

        a^j_t &= W^j_{ih} x_t + b^j_{ih} + W^j_{hh} h_{t-1} + b^j_{hh} \\
        c^j_t &= \sigma(a^j_{t,f}) \odot c^j_{t-1} + \sigma(a^j_{t,i}) \odot \tanh(a^j_{t,g}) \\
        h_t &= \textstyle\sum_{j=1}^{k} \sigma(a^j_{t,o}) \odot \tanh(c^j_t)

    As the original implementation computes it. With ``k = 1`` this is exactly
    :class:`lstm.LSTM`. How the lanes are combined into :math:`h_t` is the extension point
    :meth:`update_hidden`, as in the original: a subclass that overrides it changes the
    combination in every engine.

    Parameters
    ----------
    input_size, hidden_size : int
        As for :class:`lstm.LSTM`.
    k : int
        Number of lanes (memory cells per unit), ``>= 1``.
    **options
        The keyword options of :class:`lstm.LSTM` (``num_layers``, ``bias``, ``batch_first``,
        ``dropout``, ``bidirectional``, ``forget_bias`` (set in every lane), ``device``,
        ``dtype``).

    Attributes
    ----------
    i2h : nn.Linear
        ``(4 * hidden_size * k, input_size)`` weight, lane-major, each lane f, i, o, g.
    h2h : nn.Linear
        ``(4 * hidden_size * k, hidden_size)`` weight, laid out likewise.

    Notes
    -----
    The state of one cell is ``(k, batch, hidden_size)``; ``forward`` returns the states of
    every layer and direction stacked as ``(num_layers * num_directions * k, batch,
    hidden_size)`` and hidden as ``(num_layers * num_directions, batch, hidden_size)``.
    The fused engine runs this class's step (:class:`ArrayRule`: the input projection of all
    steps in one matrix product, each direction of each layer one autograd node with its
    backward by hand). A subclass that overrides :meth:`forward_cell` runs step by step; one
    that overrides only :meth:`update_hidden` runs on the hoisted engine (the input
    projection still hoisted), which steps :meth:`forward_cell` and so calls the override
    (:meth:`fused_problem`).

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.ArrayLSTM(8, 16, k=4)
    >>> model.i2h.weight.shape
    torch.Size([256, 8])
    >>> out, (hidden, state) = model(torch.randn(2, 5, 8))
    >>> out.shape, hidden.shape, state.shape
    (torch.Size([2, 5, 16]), torch.Size([1, 2, 16]), torch.Size([4, 2, 16]))
    """

    fast_path = FastPath("fused", "one autograd node per direction, the lanes' backward by hand")
    """This class's own step runs on the fused engine (:class:`ArrayRule`)."""
    state_rank = 3  # one cell's state is (k, batch, hidden_size), as the original's
    step_rule: StepRule = ArrayRule()
    """The step's element-wise part, with :meth:`update_hidden` as this class defines it."""

    def __init__(self, input_size: int, hidden_size: int, k: int, **options: Any) -> None:
        self.k = check_int(type(self).__name__, "k", k, 1)  # build_cell reads it
        super().__init__(input_size, hidden_size, **options)

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """``i2h``: Linear(input_size, 4Hk) and ``h2h``: Linear(hidden_size, 4Hk)."""
        width = 4 * hidden_size * self.k
        return linear_maps(
            input_size, hidden_size, width, bias=self.bias, device=device, dtype=dtype
        )

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: x (batch, input_size), hidden (batch, H), state (k, batch, H).

        :func:`array_lstm_lanes`, then :meth:`update_hidden` combines the lanes.
        """
        check_forward_cell(self, x, hidden, state, lead=(self.k,))
        outputs, state = array_lstm_lanes(self.i2h(x) + self.h2h(hidden), state)
        return self.combined_hidden(outputs, state), state

    def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        r"""Combine the lanes into the hidden output: :math:`h_t = \sum_j o^j_t \odot \tanh(c^j_t)`.

        The original implementation's extension point, under its name and arguments, and as
        it computes it by default (:func:`sum_lanes`). Every cell of this family calls it
        from :meth:`forward_cell` on every engine, so a subclass that overrides it changes
        how the lanes are combined and nothing else.

        Parameters
        ----------
        outputs : Tensor of shape (k, batch, hidden_size)
            Every lane's output gate :math:`o^j_t` (for :class:`AttentionArrayLSTM`, already
            scaled by the lane's attention).
        states : Tensor of shape (k, batch, hidden_size)
            Every lane's new cell state :math:`c^j_t`.

        Returns
        -------
        hidden : Tensor of shape (batch, hidden_size)
        """
        return sum_lanes(outputs, states)

    def combined_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        """:meth:`update_hidden`'s result, ``(batch, hidden_size)``: what every step calls.

        An override may return the original implementation's ``(1, batch, hidden_size)``
        (its documented layout); that leading 1 is removed, and nothing else is reshaped.

        Raises
        ------
        lstm.ShapeError
            If the result is neither shape, naming both and the one given.
        """
        hidden = self.update_hidden(outputs, states)
        wanted = (outputs.shape[1], self.hidden_size)
        if isinstance(hidden, Tensor) and hidden.shape == wanted:
            return hidden
        if isinstance(hidden, Tensor) and hidden.shape == (1, *wanted):
            return hidden.squeeze(0)
        got = shape_str(hidden.shape) if isinstance(hidden, Tensor) else type(hidden).__name__
        raise ShapeError(
            f"{type(self).__name__}.update_hidden: expected hidden of shape {shape_str(wanted)} "
            f"or {shape_str((1, *wanted))} (the original implementation's layout), got {got}"
        )

    def fused_problem(self) -> str | None:
        """Why the fused engine cannot run this module, or None (:func:`lstm.fused.fused_problem`).

        A fused rule implements :meth:`update_hidden` as the class that sets ``step_rule``
        sees it; an override below that class (or one set on the instance) is not in the
        rule, so the module runs on the hoisted engine, which calls it.
        """
        cls = type(self)
        if "update_hidden" in vars(self):
            return f"update_hidden is set on the {cls.__name__} instance"
        owner = cast(type[ArrayLSTM], next(k for k in cls.__mro__ if "step_rule" in vars(k)))
        if cls.update_hidden is owner.update_hidden:
            return None
        definer = next(klass for klass in cls.__mro__ if "update_hidden" in vars(klass))
        return f"{definer.__name__} overrides update_hidden of {owner.__name__}"

    def init_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zeros: hidden (batch, hidden_size), state (k, batch, hidden_size)."""
        batch = x.shape[0]
        return x.new_zeros(batch, self.hidden_size), x.new_zeros(self.k, batch, self.hidden_size)

    def forget_rows(self, rows: Tensor) -> Tensor:
        """The forget-gate entries of every lane: ``(k, hidden_size, ...)`` of a ``(4Hk, ...)``."""
        return rows.view(self.k, 4, self.hidden_size, *rows.shape[1:])[:, 0]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k={self.k}"


def _choose_lanes(scores: Tensor, sample: bool) -> Tensor:
    r"""One lane per unit from :math:`p_j = \mathrm{softmax}_j(s^j)` over the lanes' scores.

    With ``sample=False``, the most likely lane, :math:`j^* = \arg\max_j s^j` (the softmax
    keeps the order, so it is not computed). With ``sample=True``, :math:`j^* \sim p`, drawn
    by the Gumbel-max trick (:func:`_gumbel_max_lanes`). No gradient flows through the choice.

    Parameters
    ----------
    scores : Tensor of shape (k, batch, hidden_size)
        The lanes' scores :math:`s^j` (logits of :math:`p`), per unit.
    sample : bool
        Draw the lane (True) or take the most likely one (False).

    Returns
    -------
    choice : Tensor of shape (1, batch, hidden_size), int64
        Each unit's lane, ready for ``gather`` along dimension 0.
    """
    if not sample:  # argmax's index, by the faster max(...).indices (see _gumbel_max_lanes)
        return scores.max(dim=0, keepdim=True).indices
    return _gumbel_max_lanes(scores)


def _gumbel_max_lanes(scores: Tensor) -> Tensor:
    r"""Draw one lane per unit from :math:`p_j = \mathrm{softmax}_j(s^j)` (Gumbel-max trick).

    For every unit, with independent :math:`U^j \sim \mathcal{U}(0, 1)` per lane,

    .. math::

        G^j = -\log(-\log U^j), \qquad j^* = \arg\max_j \, (s^j + G^j),
        \qquad P(j^* = j) = \frac{e^{s^j}}{\sum_l e^{s^l}} = p_j

    (:math:`G^j` are standard Gumbel variables: E. J. Gumbel, *Statistical Theory of Extreme
    Values and Some Practical Applications*, 1954; the trick as used in sampling, e.g. C. J.
    Maddison, D. Tarlow and T. Minka, *A\* Sampling*, NeurIPS 2014). This replaces a
    ``torch.multinomial`` over ``batch * hidden_size`` rows of :math:`p`: it needs neither
    the softmax nor a row-major copy, only one uniform draw and element-wise operations.

    :math:`U` is clamped to at least the smallest normal number, so :math:`G` is finite: a
    lane whose score is :math:`-\infty` (:math:`p_j = 0`) is never drawn, unless all of a
    unit's lanes are (then lane 0, where :math:`p` is undefined). The noise is drawn in
    float32 for float16 and bfloat16 scores (their uniform draws are too coarse), else in
    the scores' dtype. It comes from torch's default generator on the scores' device, so
    ``torch.manual_seed`` reproduces it.

    Parameters
    ----------
    scores : Tensor of shape (k, batch, hidden_size)
        The lanes' scores :math:`s^j` (logits of :math:`p`), per unit.

    Returns
    -------
    choice : Tensor of shape (1, batch, hidden_size), int64
        Each unit's drawn lane, ready for ``gather`` along dimension 0.
    """
    dtype = torch.promote_types(scores.dtype, torch.float32)
    uniform = torch.rand(scores.shape, dtype=dtype, device=scores.device)
    # log(-log U) in place, finite for U in [tiny, 1); then s - log(-log U) = s + G.
    log_exponential = uniform.clamp_min_(torch.finfo(dtype).tiny).log_().neg_().log_()
    perturbed = log_exponential.neg_().add_(scores.detach())  # (k, B, H)
    # max(...).indices: argmax's index (the first maximum), several times faster than
    # argmax over dimension 0 on the CPU (pytorch/pytorch#140000).
    return perturbed.max(dim=0, keepdim=True).indices


def pool_lanes(outputs: Tensor, states: Tensor, sample: bool) -> Tensor:
    r"""Stochastic output pooling: each unit's hidden output comes from one lane.

    For every unit, a lane :math:`j^*` is chosen from
    :math:`p_j = \mathrm{softmax}_j(o^j_t)` over the lanes' output gates, and

    .. math::

        h_t = o^{j^*}_t \odot \tanh(c^{j^*}_t)

    With ``sample=False``, :math:`j^* = \arg\max_j p_j` per unit, as the original
    implementation computes it; ``sample=True`` draws :math:`j^* \sim p`, this project's
    reading of the paper. No gradient flows through the choice itself.

    Parameters
    ----------
    outputs : Tensor of shape (k, batch, hidden_size)
        Every lane's output gate :math:`o^j_t`.
    states : Tensor of shape (k, batch, hidden_size)
        Every lane's new cell state.
    sample : bool
        Draw the lane (True) or take the most likely one (False).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    """
    return _pool_chosen(outputs, states, _choose_lanes(outputs, sample))


def _pool_chosen(outputs: Tensor, states: Tensor, choice: Tensor) -> Tensor:
    """:func:`pool_lanes` with the lanes chosen: ``choice`` ``(1, batch, H)``, one per unit."""
    selected_output = outputs.gather(0, choice).squeeze(0)  # (B, H)
    selected_state = states.gather(0, choice).squeeze(0)
    return selected_output * torch.tanh(selected_state)


def stochastic_output_pooling(gates: Tensor, state: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
    r"""One Array-LSTM step whose hidden output comes from one lane per unit.

    The lanes' cell states update as in :func:`array_lstm_lanes`; :func:`pool_lanes` then
    takes each unit's output from one lane, chosen from
    :math:`p_j = \mathrm{softmax}_j(o^j)` over the lanes' output gates
    :math:`o^j = \sigma(a^j_o)`: its most likely lane (``sample=False``, as the original
    implementation computes it) or drawn from it (``sample=True``, this project's reading of
    the paper), and :math:`h_t = o^{j^*} \odot \tanh(c^{j^*}_t)`.

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations, each lane f, i, o, g.
    state : Tensor of shape (k, batch, hidden_size)
    sample : bool
        Draw the lane (True) or take the most likely one (False).

    Returns
    -------
    hidden : Tensor of shape (batch, hidden_size)
    state : Tensor of shape (k, batch, hidden_size)
    """
    outputs, state = array_lstm_lanes(gates, state)
    return pool_lanes(outputs, state, sample), state


class StochasticArrayRule(ArrayRule):
    r""":func:`stochastic_output_pooling` for the fused engine, with its backward by hand.

    The lanes' step is :class:`ArrayRule`'s; the hidden output comes from one lane per unit,
    chosen by the same call as on the reference path (:func:`_choose_lanes` on the output
    gates :math:`o^j`, ``(k, batch, H)``, at every step in the same order, so that the same
    seed draws the same lanes), and with :math:`\tau^* = \tanh(c^{j^*}_t)`:

    .. math::

        h_t = o^{j^*} \odot \tau^*

    Backward: the gradient reaches only the chosen lane's output gate and cell state, as
    autograd's ``gather`` sends it, and none reaches the choice. With :math:`[j = j^*]` the
    indicator of the chosen lane, per unit:

    .. math::

        \bar c'^j &= \bar c^j + [j = j^*]\, \bar h \odot o^{j^*} \odot (1 - (\tau^*)^2),
        \qquad \bar o^j = [j = j^*]\, \bar h \odot \tau^* \\
        \bar a^j_o &= \bar o^j \odot o^j (1 - o^j)

    and :math:`\bar a^j_f, \bar a^j_i, \bar a^j_g, \bar c^j_{t-1}` from :math:`\bar c'^j`
    as in :class:`ArrayRule`.

    :meth:`bind` returns a copy for one call that draws exactly when the module does
    (:attr:`_LaneChoice.draws`) and, under autograd, remembers its choices:
    :meth:`reference`, which the fused engine runs again step by step in forward order for
    higher derivatives, then takes the lanes that forward took instead of choosing (drawing)
    anew.
    """

    def __init__(self, sample: bool = False, remember: bool = False) -> None:
        self.sample = sample
        self.choices: list[Tensor] | None = [] if remember else None
        self.replayed = 0

    def bind(self, cell: Recurrent) -> StepRule:
        """A copy that draws with ``sample_lanes`` in training and remembers its choices.

        Only under autograd: without it no backward, let alone a differentiated one, runs.
        """
        assert isinstance(cell, _LaneChoice)
        return type(self)(sample=cell.draws, remember=torch.is_grad_enabled())

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), (c_{t-1}, choice, o*, tanh c*, *lanes))``."""
        (cell_state,) = state
        new_state, lanes = _lanes_step(gates, cell_state)
        choice = _choose_lanes(lanes[4], self.sample)  # (1, B, H), from the output gates
        if self.choices is not None:
            self.choices.append(choice)
        chosen_output = lanes[4].gather(0, choice).squeeze(0)
        chosen_squashed = torch.tanh(new_state.gather(0, choice).squeeze(0))
        saved = (cell_state, choice, chosen_output, chosen_squashed, *lanes)
        return chosen_output * chosen_squashed, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        cell_state, choice, chosen_output, chosen_squashed = saved[:4]
        d_chosen_state = _tanh_backward(d_hidden * chosen_output, chosen_squashed)  # (B, H)
        d_new_state = d_state[0].scatter_add(0, choice, d_chosen_state.unsqueeze(0))
        d_chosen_output = (d_hidden * chosen_squashed).unsqueeze(0)
        d_gates, d_before = _lanes_backward(
            saved[4:],
            cell_state,
            d_new_state,
            lambda d_output: d_output.zero_().scatter_(0, choice, d_chosen_output),
        )
        return d_gates, (d_before,), ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`stochastic_output_pooling`, with the lanes forward chose once it has run."""
        if not self.choices:
            hidden, new_state = stochastic_output_pooling(gates, state[0], self.sample)
            return hidden, (new_state,)
        choice = self.choices[self.replayed % len(self.choices)]  # called in forward's order
        self.replayed += 1
        outputs, new_state = array_lstm_lanes(gates, state[0])
        return _pool_chosen(outputs, new_state, choice), (new_state,)


class _LaneChoice(ArrayLSTM):
    """The Array cells that choose one lane per unit: the ``sample_lanes`` option they share.

    By default the most likely lane, in training and eval mode alike; ``sample_lanes=True``
    draws it in training mode (:attr:`draws`). See :class:`StochasticArrayLSTM` and
    :class:`StochasticMemoryArrayLSTM`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        k: int,
        *,
        sample_lanes: bool = False,
        **options: Any,
    ) -> None:
        self.sample_lanes = check_bool(type(self).__name__, "sample_lanes", sample_lanes)
        super().__init__(input_size, hidden_size, k, **options)

    @property
    def draws(self) -> bool:
        """Whether this step draws its lanes at random: ``sample_lanes`` in training mode."""
        return self.sample_lanes and self.training

    def extra_repr(self) -> str:
        return super().extra_repr() + (", sample_lanes=True" if self.sample_lanes else "")


class StochasticArrayLSTM(_LaneChoice):
    r"""Array-LSTM with stochastic output pooling (Rocki 2016).

    Every lane keeps its own cell state, but the hidden output of each unit comes from a
    single lane :math:`j^*`, chosen from :math:`p_j = \mathrm{softmax}_j(o^j_t)` over the
    lanes' output gates (:func:`pool_lanes`):

    .. math::

        h_t = o^{j^*}_t \odot \tanh(c^{j^*}_t)

    By default the most likely lane, in training and eval mode alike, as the original
    implementation computes it: a model's predictions do not depend on whether ``.eval()``
    was called. ``sample_lanes=True`` is this project's reading of the paper: in training
    mode the lane is drawn from :math:`p`, in eval mode the most likely one is taken.

    Parameters
    ----------
    input_size, hidden_size, k
        As for :class:`ArrayLSTM`.
    sample_lanes : bool, default False
        Keyword-only. Draw each unit's lane from :math:`p` in training mode (True), or
        always take its most likely lane (False, the original's behaviour).
    **options
        As for :class:`ArrayLSTM`.

    Notes
    -----
    The lane is chosen per unit, as the original implementation does: it takes the softmax
    over lanes of the output gates and the maximum per unit (argmax over the lanes). No
    gradient flows through the choice itself. The pooling is this class's
    :meth:`update_hidden`; the step is :class:`ArrayLSTM`'s, and it runs on the fused engine
    with this class's rule (:class:`StochasticArrayRule`), which chooses the lanes with the
    same calls in the same order as the step-by-step path (the same seed draws the same
    lanes). A subclass that overrides :meth:`update_hidden` runs on the hoisted engine.

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.StochasticArrayLSTM(8, 16, k=4).train()
    >>> x = torch.randn(2, 5, 8)
    >>> torch.equal(model(x)[0], model(x)[0])  # the original's argmax, in training too
    True
    >>> sampling = lstm.StochasticArrayLSTM(8, 16, k=4, sample_lanes=True)
    """

    step_rule: StepRule = StochasticArrayRule()
    """:class:`ArrayLSTM`'s step with this class's :meth:`update_hidden`, on the fused engine."""

    def update_hidden(self, outputs: Tensor, states: Tensor) -> Tensor:
        """One lane per unit (:func:`pool_lanes`), drawn only with ``sample_lanes`` in training.

        Parameters
        ----------
        outputs, states : Tensor of shape (k, batch, hidden_size)
            Every lane's output gate and new cell state.

        Returns
        -------
        hidden : Tensor of shape (batch, hidden_size)
        """
        return pool_lanes(outputs, states, sample=self.draws)


# ------------------------------------------------------------------ soft lane attention


def attention_array_lanes(
    gates: Tensor, attention: Tensor, state: Tensor, max_pooling: bool
) -> tuple[Tensor, Tensor]:
    r"""Every lane's scaled output gate and new cell state under soft lane attention.

    As the original implementation computes it. With :math:`z^j` the lane's pre-activations
    (f, i, o, g) and :math:`e^j` its rows of the attention map ``i2a(x)``, per unit:

    .. math::

        a^j &= \sigma(e^j), \qquad s^j = \frac{\exp a^j}{\sum_l \exp a^l}
            \quad (\text{max pooling: } s^j = \max_l s^l \text{ for every } j) \\
        f^j &= s^j \odot \sigma(z^j_f), \quad i^j = s^j \odot \sigma(z^j_i), \quad
            o^j = s^j \odot \sigma(z^j_o), \quad g^j = \tanh(z^j_g) \\
        c^j_t &= c^j_{t-1} \odot (1 - f^j) + i^j \odot g^j

    Note :math:`1 - f^j`: the original's forget gate is a "forget amount". The hidden output
    is then :math:`\sum_j o^j \odot \tanh(c^j_t)` (:meth:`ArrayLSTM.update_hidden`).

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations ``i2h(x) + h2h(h)``, each lane f, i, o, g.
    attention : Tensor of shape (batch, k * hidden_size)
        Lane-major ``i2a(x)``: lane ``j`` is columns ``[Hj, H(j + 1))``.
    state : Tensor of shape (k, batch, hidden_size)
    max_pooling : bool
        Give every lane the largest attention weight of its unit.

    Returns
    -------
    outputs : Tensor of shape (k, batch, hidden_size)
        :math:`o^j`, scaled by the attention.
    state : Tensor of shape (k, batch, hidden_size)
    """
    weights = _lane_attention(attention, state.shape[0], max_pooling)
    return _attended_lanes(gates, weights, state)


def _lane_attention(attention: Tensor, lanes: int, max_pooling: bool) -> Tensor:
    r"""The lanes' attention weights :math:`s^j` from ``i2a``'s output :math:`e`, per unit.

    :math:`s^j = \mathrm{softmax}_j\, \sigma(e^j)`; with max pooling every lane gets
    :math:`\max_l s^l`. Lane-major in and out, ``(..., k * hidden_size)``: any leading
    dimensions (a step's batch, or every step at once on the fused engine).
    """
    size = attention.shape[-1] // lanes
    scores = torch.sigmoid(attention).reshape(*attention.shape[:-1], lanes, size)  # (..., k, H)
    weights = torch.softmax(scores, dim=-2)  # over the lanes, per unit
    if max_pooling:
        weights = weights.amax(dim=-2, keepdim=True).expand_as(weights)
    return weights.flatten(-2)


def _attended_lanes(gates: Tensor, weights: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`attention_array_lanes` with the weights :math:`s` given, ``(batch, k * H)``."""
    lanes, batch, size = state.shape
    scale = weights.view(batch, lanes, size).transpose(0, 1)  # (k, B, H)
    per_lane = _lane_blocks(gates, lanes)  # (k, B, 4H)
    forget, input_gate, output = torch.sigmoid(per_lane[..., : 3 * size]).chunk(3, dim=-1)
    forget, input_gate, output = scale * forget, scale * input_gate, scale * output
    state = state * (1 - forget) + input_gate * torch.tanh(per_lane[..., 3 * size :])
    return output, state


class AttentionArrayRule(StepRule):
    r"""Soft lane attention summed by :func:`sum_lanes`, for the fused engine.

    The attention weights depend on the input only, so :meth:`project` computes them for
    every step at once, under autograd (whose gradient of ``amax`` splits evenly among tied
    lanes, as on the reference path): the step receives :math:`s` (lane-major,
    ``(batch, k * H)``) in the columns past the gates, and returns its gradient there.

    Forward, per lane :math:`j` and unit (:func:`attention_array_lanes`), with
    :math:`F, I, O = \sigma(z_f), \sigma(z_i), \sigma(z_o)` and :math:`G = \tanh(z_g)`:

    .. math::

        u = I G - F c_{t-1}, \quad c_t = c_{t-1} + s\,u, \quad \tau = \tanh(c_t), \quad
        h_t = \textstyle\sum_j s\,O\,\tau

    Backward, from the gradients :math:`\bar h` of :math:`h_t` and :math:`\bar c` of
    :math:`c_t`:

    .. math::

        \bar c' &= \bar c + \bar h\, s\,O\,(1 - \tau^2), \quad
        \bar c_{t-1} = \bar c' (1 - s F), \quad
        \bar s = \bar h\, O\,\tau + \bar c'\, u \\
        \bar z_f &= -\bar c'\, s\, c_{t-1}\, F (1 - F), \quad
        \bar z_i = \bar c'\, s\, G\, I (1 - I), \quad
        \bar z_o = \bar h\, s\, \tau\, O (1 - O), \quad
        \bar z_g = \bar c'\, s\, I (1 - G^2)

    Parameters
    ----------
    max_pooling : bool, default False
        The module's setting (:meth:`bind` copies it).
    """

    def __init__(self, max_pooling: bool = False) -> None:
        self.max_pooling = max_pooling

    def bind(self, cell: Recurrent) -> AttentionArrayRule:
        """The rule for ``cell``'s ``max_pooling``."""
        assert isinstance(cell, AttentionArrayLSTM)
        pooling = cell.max_pooling
        return self if pooling == self.max_pooling else AttentionArrayRule(pooling)

    def project(self, cell: Recurrent, inputs: Tensor) -> Tensor:
        """``i2h`` (with ``h2h``'s bias), then the attention weights :math:`s`, of every step.

        ``inputs`` is made time-major and contiguous once, so that each map is one product
        with its bias; ``i2h`` and ``i2a`` stay two products (one over their joint rows was
        slower on the CPU).
        """
        assert isinstance(cell, AttentionArrayLSTM)
        steps, batch, features = inputs.shape
        flat = inputs.reshape(steps * batch, features)
        i2h, h2h = cell.i2h, cell.h2h
        bias: Tensor | None = i2h.bias  # and h2h's: either may be absent
        if h2h.bias is not None:
            bias = h2h.bias if bias is None else bias + h2h.bias
        gates = nn.functional.linear(flat, i2h.weight, bias)
        weights = _lane_attention(cell.i2a(flat), cell.k, self.max_pooling)
        joined = torch.cat((gates, weights), dim=-1)
        return joined.view(steps, batch, joined.shape[-1])

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), saved)``; the lanes as ``(batch, k, ...)`` views."""
        (cell_state,) = state
        lanes, batch, size = cell_state.shape
        per_lane = gates[:, : 4 * lanes * size].view(batch, lanes, 4, size)
        scale = gates[:, 4 * lanes * size :].view(batch, lanes, size)
        gated = torch.sigmoid(per_lane[:, :, :3])  # (B, k, 3, H)
        forget, input_gate, output = gated.unbind(2)
        candidate = torch.tanh(per_lane[:, :, 3])
        before = cell_state.transpose(0, 1)  # (B, k, H)
        update = torch.addcmul(input_gate * candidate, forget, before, value=-1)
        new_state = torch.empty_like(cell_state)
        torch.addcmul(before, scale, update, out=new_state.transpose(0, 1))
        squashed = torch.tanh(new_state).transpose(0, 1)  # (B, k, H)
        scaled_output = scale * output
        hidden = (scaled_output * squashed).sum(1)
        saved = (gated, candidate, scale, before, update, squashed, scaled_output)
        return hidden, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        gated, candidate, scale, before, update, squashed, scaled_output = saved
        batch, lanes, size = scale.shape
        forget, input_gate, output = gated.unbind(2)
        d_out = d_hidden.unsqueeze(1)  # (B, 1, H)
        d_cell = torch.addcmul(
            d_state[0].transpose(0, 1), d_out * scaled_output, 1 - squashed * squashed
        )  # (B, k, H)
        d_scaled = d_cell * scale
        d_gates = d_hidden.new_empty(batch, 5 * lanes * size)
        d_per_lane = d_gates[:, : 4 * lanes * size].view(batch, lanes, 4, size)
        d_forget, d_input, d_output, d_candidate = d_per_lane.unbind(2)
        torch.mul(d_scaled, before, out=d_forget)  # negated below, with the sigmoid's slope
        torch.mul(d_scaled, candidate, out=d_input)
        torch.mul(d_out * scale, squashed, out=d_output)
        d_per_lane[:, :, :3] *= gated * (1 - gated)
        d_forget.neg_()
        torch.mul(d_scaled * input_gate, 1 - candidate * candidate, out=d_candidate)
        d_scale = d_gates[:, 4 * lanes * size :].view(batch, lanes, size)
        torch.addcmul(d_cell * update, d_out * output, squashed, out=d_scale)
        d_before = torch.empty_like(d_state[0])
        torch.addcmul(d_cell, d_scaled, forget, value=-1, out=d_before.transpose(0, 1))
        return d_gates, (d_before,), ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`attention_array_lanes`'s step with the weights given, then :func:`sum_lanes`."""
        (cell_state,) = state
        width = 4 * cell_state.shape[0] * cell_state.shape[2]
        outputs, new_state = _attended_lanes(gates[:, :width], gates[:, width:], cell_state)
        return sum_lanes(outputs, new_state), (new_state,)


def _update_hidden_problem(cell: ArrayLSTM) -> str | None:
    """What keeps a fused rule (which sums the lanes) from ``cell``, or None."""
    if type(cell).update_hidden is not ArrayLSTM.update_hidden:
        return f"{type(cell).__name__} overrides update_hidden"
    return None


class AttentionArrayLSTM(ArrayLSTM):
    r"""Array-LSTM with soft lane attention (Rocki 2016), as the original implementation has it.

    An extra map ``i2a`` of the input gives, per unit, a softmax over the lanes that scales
    every lane's gates (:func:`attention_array_lanes`):

    .. math::

        s^j_t &= \mathrm{softmax}_j\, \sigma(W^j_{ia} x_t + b^j_{ia})
            \quad (\text{max pooling: } s^j_t = \max_l s^l_t) \\
        c^j_t &= c^j_{t-1} \odot (1 - s^j_t \odot \sigma(a^j_{t,f}))
            + s^j_t \odot \sigma(a^j_{t,i}) \odot \tanh(a^j_{t,g}) \\
        h_t &= \textstyle\sum_{j=1}^{k} s^j_t \odot \sigma(a^j_{t,o}) \odot \tanh(c^j_t)

    with :math:`a^j_t` as in :class:`ArrayLSTM`. As the original implementation computes it,
    :math:`1 - f` included, so with ``k = 1`` (:math:`s = 1`) it is *not* the LSTM: the
    forget gate is a forget amount.

    Parameters
    ----------
    input_size, hidden_size, k
        As for :class:`ArrayLSTM`.
    max_pooling : bool, default False
        Give every lane the largest attention weight of its unit (the original's option, and
        its fourth positional argument).
    **options
        As for :class:`ArrayLSTM`. ``forget_bias`` sets the f rows of every lane, which here
        is the bias of the forget *amount*.

    Attributes
    ----------
    i2h, h2h : nn.Linear
        As in :class:`ArrayLSTM`.
    i2a : nn.Linear
        ``(hidden_size * k, input_size)`` weight and ``(hidden_size * k,)`` bias, lane-major
        (lane ``j`` is rows ``[Hj, H(j + 1))``); suffixed per layer and direction like
        ``i2h`` (``i2a_reverse``, ``i2a_l1``, ...). ``nn.Linear``'s initialisation.

    Notes
    -----
    A single-layer unidirectional model has exactly the original's state_dict keys
    (``i2h.weight``, ``i2h.bias``, ``h2h.weight``, ``h2h.bias``, ``i2a.weight``,
    ``i2a.bias``), so its checkpoints load unchanged. It runs on the fused engine
    (:class:`AttentionArrayRule`): ``i2h`` and ``i2a`` of all steps, with the attention
    weights, before the loop. A subclass that overrides :meth:`update_hidden` runs hoisted
    (``i2h`` only; the fused rule sums the lanes), as does a model whose ``i2a`` is not a
    plain ``nn.Linear``.

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.AttentionArrayLSTM(8, 16, k=4)
    >>> list(model.state_dict())[4:]
    ['i2a.weight', 'i2a.bias']
    >>> out, (hidden, state) = model(torch.randn(2, 5, 8))
    >>> out.shape, state.shape
    (torch.Size([2, 5, 16]), torch.Size([4, 2, 16]))
    """

    i2a: nn.Linear

    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    """This class's own step runs on the fused engine."""
    step_rule = AttentionArrayRule()

    def __init__(
        self, input_size: int, hidden_size: int, k: int, max_pooling: bool = False, **options: Any
    ) -> None:
        self.max_pooling = check_bool(type(self).__name__, "max_pooling", max_pooling)
        super().__init__(input_size, hidden_size, k, **options)

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """:class:`ArrayLSTM`'s ``i2h`` and ``h2h``, and ``i2a``: Linear(input_size, Hk)."""
        parts = super().build_cell(input_size, hidden_size, device=device, dtype=dtype)
        width = hidden_size * self.k
        parts["i2a"] = nn.Linear(input_size, width, bias=self.bias, device=device, dtype=dtype)
        return parts

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: :func:`attention_array_lanes`, then :meth:`update_hidden`.

        x (batch, input_size), hidden (batch, H), state (k, batch, H).
        """
        check_forward_cell(self, x, hidden, state, lead=(self.k,))
        gates = self.i2h(x) + self.h2h(hidden)  # (B, 4Hk)
        outputs, state = attention_array_lanes(gates, self.i2a(x), state, self.max_pooling)
        return self.combined_hidden(outputs, state), state

    def fused_problem(self) -> str | None:
        """Why the fused engine cannot run this cell: an overridden :meth:`update_hidden`
        (the rule sums the lanes), or an ``i2a`` it cannot apply to all steps at once."""
        layer, direction = self.cell_index
        name = "i2a" + cell_suffix(layer, direction)
        return _update_hidden_problem(self) or plain_linear_problem(name, self._modules["i2a"])

    def extra_repr(self) -> str:
        return super().extra_repr() + (", max_pooling=True" if self.max_pooling else "")


# ------------------------------------------------------------------ stochastic memory array


def stochastic_memory_lanes(gates: Tensor, state: Tensor, sample: bool) -> tuple[Tensor, Tensor]:
    r"""Every lane's output gate and new cell state when one lane per unit is written.

    This project's reading of the paper (the original implementation has no such cell).
    Per unit, a lane :math:`j^*` is chosen from :math:`p_j = \mathrm{softmax}_j(z^j_i)`
    over the lanes' input-gate pre-activations (no gradient through :math:`p`): its most
    likely lane (``sample=False``) or drawn from it (``sample=True``). Only that lane is
    written; every other lane keeps its contents bit for bit:

    .. math::

        c^j_t = \begin{cases}
            \sigma(z^j_f) \odot c^j_{t-1} + \sigma(z^j_i) \odot \tanh(z^j_g) & j = j^* \\
            c^j_{t-1} & \text{otherwise}
        \end{cases}, \qquad o^j = \sigma(z^j_o)

    The hidden output then reads every lane, :math:`\sum_j o^j \odot \tanh(c^j_t)`
    (:meth:`ArrayLSTM.update_hidden`). With ``k = 1`` this is the LSTM.

    Parameters
    ----------
    gates : Tensor of shape (batch, k * 4 * hidden_size)
        Lane-major pre-activations ``i2h(x) + h2h(h)``, each lane f, i, o, g.
    state : Tensor of shape (k, batch, hidden_size)
    sample : bool
        Draw the written lane (True) or take the most likely one (False).

    Returns
    -------
    outputs : Tensor of shape (k, batch, hidden_size)
        The lanes' output gates :math:`o^j`.
    state : Tensor of shape (k, batch, hidden_size)
    """
    return _write_chosen_lanes(gates, state, _memory_choice(gates, state, sample))


def _memory_choice(gates: Tensor, state: Tensor, sample: bool) -> Tensor:
    """The lane each unit writes, ``(1, batch, H)``: :func:`_choose_lanes` over :math:`z_i`."""
    lanes, _, size = state.shape
    return _choose_lanes(_lane_blocks(gates, lanes)[..., size : 2 * size], sample)


def _write_chosen_lanes(gates: Tensor, state: Tensor, choice: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`stochastic_memory_lanes` with the written lanes given, ``(1, batch, H)``."""
    lanes, _, size = state.shape
    per_lane = _lane_blocks(gates, lanes)  # (k, B, 4H)
    forget, input_gate, output = torch.sigmoid(per_lane[..., : 3 * size]).chunk(3, dim=-1)
    written = forget * state + input_gate * torch.tanh(per_lane[..., 3 * size :])
    lane = torch.arange(lanes, device=state.device).view(lanes, 1, 1)
    return output, torch.where(lane == choice, written, state)


class StochasticMemoryRule(StepRule):
    r"""The stochastic memory array summed by :func:`sum_lanes`, for the fused engine.

    Forward, per lane :math:`j` and unit (:func:`stochastic_memory_lanes`), with
    :math:`F, I, O = \sigma(z_f), \sigma(z_i), \sigma(z_o)`, :math:`G = \tanh(z_g)` and
    :math:`m^j = [j = j^*]` for the lane :math:`j^*` chosen from :math:`z_i` by
    :func:`_choose_lanes` (the same call, so the same random draws, as the other engines):

    .. math::

        c_t = m\,(F c_{t-1} + I G) + (1 - m)\, c_{t-1}, \quad \tau = \tanh(c_t), \quad
        h_t = \textstyle\sum_j O\,\tau

    Backward, from the gradients :math:`\bar h` of :math:`h_t` and :math:`\bar c` of
    :math:`c_t`; no gradient flows through the choice, and an unwritten lane passes its
    gradient straight through:

    .. math::

        \bar c' &= \bar c + \bar h\, O\,(1 - \tau^2), \quad
        \bar w = m\, \bar c', \quad
        \bar c_{t-1} = \bar c' \,(m F + 1 - m) \\
        \bar z_f &= \bar w\, c_{t-1}\, F (1 - F), \quad
        \bar z_i = \bar w\, G\, I (1 - I), \quad
        \bar z_o = \bar h\, \tau\, O (1 - O), \quad
        \bar z_g = \bar w\, I (1 - G^2)

    Parameters
    ----------
    sample : bool, default False
        Draw the written lanes (:meth:`bind` sets it from the module's
        :attr:`~_LaneChoice.draws`: ``sample_lanes`` in training mode).

    Notes
    -----
    A bound rule keeps the lanes its forward chose, in step order, and :meth:`reference`
    replays them, so the recomputation for higher derivatives (which runs the steps in the
    same order) differentiates the function the forward computed, draws included, and
    draws nothing more.
    """

    def __init__(self, sample: bool = False, *, record: bool = False) -> None:
        self.sample = sample
        self.choices: list[Tensor] | None = [] if record else None
        self.replayed = 0
        self.lanes: Tensor | None = None  # 0..k-1 as (k, 1, 1), made at the first step

    def bind(self, cell: Recurrent) -> StochasticMemoryRule:
        """A fresh rule for one call on ``cell``: drawing as ``cell.draws`` says."""
        assert isinstance(cell, StochasticMemoryArrayLSTM)
        return StochasticMemoryRule(cell.draws, record=True)

    def forward(
        self, gates: Tensor, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), saved)``; the lanes as ``(batch, k, ...)`` views."""
        (cell_state,) = state
        lanes, batch, size = cell_state.shape
        choice = _memory_choice(gates, cell_state, self.sample)  # as the other engines call it
        if self.choices is not None:
            self.choices.append(choice)
        per_lane = gates.view(batch, lanes, 4, size)
        gated = torch.sigmoid(per_lane[:, :, :3])  # (B, k, 3, H)
        forget, input_gate, output = gated.unbind(2)
        candidate = torch.tanh(per_lane[:, :, 3])
        before = cell_state.transpose(0, 1)  # (B, k, H)
        written = torch.addcmul(input_gate * candidate, forget, before)
        index = self.lanes
        if index is None or index.shape[0] != lanes or index.device != gates.device:
            index = self.lanes = torch.arange(lanes, device=gates.device).view(lanes, 1, 1)
        chosen = index == choice
        new_state = torch.where(chosen, written.transpose(0, 1), cell_state)
        squashed = torch.tanh(new_state).transpose(0, 1)  # (B, k, H)
        hidden = (output * squashed).sum(1)
        saved = (gated, candidate, before, squashed, chosen.transpose(0, 1))
        return hidden, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        gated, candidate, before, squashed, chosen = saved
        batch, lanes, size = before.shape
        forget, input_gate, output = gated.unbind(2)
        d_out = d_hidden.unsqueeze(1)  # (B, 1, H)
        d_cell = torch.addcmul(
            d_state[0].transpose(0, 1), d_out * output, 1 - squashed * squashed
        )  # (B, k, H)
        d_written = d_cell * chosen
        d_gates = d_hidden.new_empty(batch, 4 * lanes * size)
        d_per_lane = d_gates.view(batch, lanes, 4, size)
        d_forget, d_input, d_output, d_candidate = d_per_lane.unbind(2)
        torch.mul(d_written, before, out=d_forget)
        torch.mul(d_written, candidate, out=d_input)
        torch.mul(d_out, squashed, out=d_output)
        d_per_lane[:, :, :3] *= gated * (1 - gated)
        torch.mul(d_written * input_gate, 1 - candidate * candidate, out=d_candidate)
        d_before = torch.empty_like(d_state[0])  # d_cell, but d_cell * F where written
        torch.addcmul(d_cell - d_written, d_written, forget, out=d_before.transpose(0, 1))
        return d_gates, (d_before,), ()

    def reference(self, gates: Tensor, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """:func:`stochastic_memory_lanes` (the recorded choice, if any), then
        :func:`sum_lanes`."""
        (cell_state,) = state
        if self.choices:
            choice = self.choices[self.replayed % len(self.choices)]
            self.replayed += 1
        else:
            choice = _memory_choice(gates, cell_state, self.sample)
        outputs, new_state = _write_chosen_lanes(gates, cell_state, choice)
        return sum_lanes(outputs, new_state), (new_state,)


class StochasticMemoryArrayLSTM(_LaneChoice):
    r"""Array-LSTM with a stochastic memory array: one lane per unit written at each step.

    This project's reading of the paper (Rocki 2016 reports it as its best model; the
    original implementation has none). Per unit, the lane :math:`j^*` chosen from
    :math:`p_j = \mathrm{softmax}_j(a^j_{t,i})` over the lanes' input-gate pre-activations
    is written; the others keep their contents; the output reads every lane
    (:func:`stochastic_memory_lanes`):

    .. math::

        c^{j^*}_t &= \sigma(a^{j^*}_{t,f}) \odot c^{j^*}_{t-1}
            + \sigma(a^{j^*}_{t,i}) \odot \tanh(a^{j^*}_{t,g}), \qquad
            c^j_t = c^j_{t-1} \; (j \ne j^*) \\
        h_t &= \textstyle\sum_{j=1}^{k} \sigma(a^j_{t,o}) \odot \tanh(c^j_t)

    with :math:`a^j_t` as in :class:`ArrayLSTM`. By default :math:`j^*` is the most likely
    lane in training and eval mode alike (deterministic, like :class:`StochasticArrayLSTM`'s
    default); ``sample_lanes=True`` draws it from :math:`p` in training mode. With ``k = 1``
    it is exactly :class:`lstm.LSTM` (same weights), in both modes.

    Parameters
    ----------
    input_size, hidden_size, k
        As for :class:`ArrayLSTM`.
    sample_lanes : bool, default False
        Keyword-only. Draw each unit's written lane from :math:`p` in training mode (True),
        or always write its most likely lane (False).
    **options
        As for :class:`ArrayLSTM`.

    Attributes
    ----------
    i2h, h2h : nn.Linear
        As in :class:`ArrayLSTM` (same shapes, same layout).

    Notes
    -----
    It runs on the fused engine (:class:`StochasticMemoryRule`), which draws the same lanes
    as the other engines for the same seed. A subclass that overrides :meth:`update_hidden`
    runs hoisted (the fused rule sums the lanes).

    Examples
    --------
    >>> import torch, lstm
    >>> model = lstm.StochasticMemoryArrayLSTM(8, 16, k=4, sample_lanes=True)
    >>> out, (hidden, state) = model.eval()(torch.randn(2, 5, 8))
    >>> out.shape, state.shape
    (torch.Size([2, 5, 16]), torch.Size([4, 2, 16]))
    """

    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    """This class's own step runs on the fused engine."""
    step_rule = StochasticMemoryRule()

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """The parameters of :class:`ArrayLSTM`: ``i2h`` and ``h2h``, Linear(..., 4Hk).

        Declared here so that this class's step owns its parameters, and its fast path
        applies (:func:`lstm.engines.step_source`).
        """
        return super().build_cell(input_size, hidden_size, device=device, dtype=dtype)

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: :func:`stochastic_memory_lanes`, then :meth:`update_hidden`.

        x (batch, input_size), hidden (batch, H), state (k, batch, H).
        """
        check_forward_cell(self, x, hidden, state, lead=(self.k,))
        gates = self.i2h(x) + self.h2h(hidden)  # (B, 4Hk)
        outputs, state = stochastic_memory_lanes(gates, state, self.draws)
        return self.combined_hidden(outputs, state), state

    def fused_problem(self) -> str | None:
        """Why the fused engine cannot run this cell: an overridden :meth:`update_hidden`
        (the rule sums the lanes)."""
        return _update_hidden_problem(self)
