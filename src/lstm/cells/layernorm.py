r"""Layer-normalised LSTM (J. L. Ba, J. R. Kiros and G. E. Hinton, *Layer Normalization*,
arXiv:1607.06450, 2016; pytorch#6760)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstm.checks import check_forward_cell
from lstm.driver import Recurrent
from lstm.engines import FastPath
from lstm.fused import StepRule, Tensors
from lstm.parameters import CellPart, Device, DType, cell_suffix, linear_maps
from lstm.state import takes_original_layout

EPS = 1e-5
"""The layer norms' ``eps`` (``nn.LayerNorm``'s default), the one :class:`LayerNormRule` uses."""


def layernorm_lstm_pointwise(
    gates: Tensor, state: Tensor, norm_cell: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    r"""The gates of one layer-normalised LSTM step, from the normalised pre-activations.

    .. math::

        c_t = \sigma(a_{t,f}) \odot c_{t-1} + \sigma(a_{t,i}) \odot \tanh(a_{t,g}), \quad
        h_t = \sigma(a_{t,o}) \odot \tanh(\mathrm{LN}_{c}(c_t))

    Parameters
    ----------
    gates : Tensor of shape (batch, 4 * hidden_size)
        :math:`a_t = \mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1})`,
        blocks f, i, o, g.
    state : Tensor of shape (batch, hidden_size)
        :math:`c_{t-1}`, un-normalised.
    norm_cell : callable
        :math:`\mathrm{LN}_c`, over the last dimension.

    Returns
    -------
    hidden, state : Tensor of shape (batch, hidden_size)
        :math:`h_t` and the un-normalised :math:`c_t`.
    """
    forget, input_gate, output, candidate = gates.chunk(4, dim=-1)
    state = torch.sigmoid(forget) * state + torch.sigmoid(input_gate) * torch.tanh(candidate)
    return torch.sigmoid(output) * torch.tanh(norm_cell(state)), state


def _normalise(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    r""":math:`\hat x = (x - \mu_x) s_x` over the last dimension, and :math:`s_x` ``(batch, 1)``.

    ``torch.native_layer_norm`` without gain or shift: the kernel that ``layer_norm`` runs
    (the same mean, biased variance and ``eps``), which also returns :math:`s_x`. Written
    out, the same takes five to seven calls, several times slower where a step costs what its
    calls cost (batch 8, hidden 64 on the CPU); the gain and shift are applied by the rule.
    """
    normal, _, scale = torch.native_layer_norm(x, (x.shape[-1],), None, None, eps)
    return normal, scale


def _normalise_backward(
    d_out: Tensor, normal: Tensor, scale: Tensor, gain: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Layer norm's backward: the gradients of :math:`z` and of the gain from that of
    :math:`y = \gamma \odot \hat z` (:class:`LayerNormRule`'s :math:`N`).

    The two sums over the features are products with the gain (one call each, where a mean
    is two), and :math:`1/n` is folded into the last step.
    """
    product = d_out * normal  # (B, n)
    gain_column = gain.unsqueeze(1)  # (n, 1)
    total = torch.mm(d_out, gain_column)  # sum over j of y-bar
    along = torch.mm(product, gain_column)  # sum over j of y-bar * z-hat
    inner = torch.addcmul(total, normal, along)
    d_in = torch.add(d_out * gain, inner, alpha=-1 / normal.shape[-1]).mul_(scale)
    return d_in, product.sum(0)


def _gain_shift(cell: Recurrent, name: str) -> tuple[Tensor, Tensor | None]:
    """The weight and bias of ``cell``'s layer norm ``name`` (checked by ``fused_problem``)."""
    norm = cell._modules[name]
    assert isinstance(norm, nn.LayerNorm)
    assert norm.weight is not None
    return norm.weight, norm.bias


class LayerNormRule(StepRule):
    r"""The layer-normalised LSTM's step for the fused engine, with its backward by hand.

    The rule gets :math:`p_t` and :math:`r_t = W_{hh} h_{t-1}` apart (``joint = False``).
    :meth:`project` gives :math:`p_t = \mathrm{LN}_{ih}(W_{ih} x_t) + \beta_{hh}` for all
    steps under autograd (``ln_hh``'s shift folded in, like the default rule's ``h2h``
    bias); the rule normalises :math:`r_t` and :math:`c_t` itself, with ``ln_hh``'s gain
    :math:`\gamma_{hh}` and ``ln_cell``'s gain and shift :math:`\gamma_c, \beta_c`
    (:meth:`params`). Over the last dimension of :math:`z` (biased variance, the same
    :math:`\epsilon` as ``torch.nn.functional.layer_norm``):

    .. math::

        \hat z = (z - \mu_z)\, s_z, \quad
        s_z = \big(\tfrac{1}{n} \textstyle\sum_j (z_j - \mu_z)^2 + \epsilon\big)^{-1/2}

    Forward, with :math:`f, i, o` the sigmoids of their blocks and :math:`g` the tanh:

    .. math::

        a &= p_t + \gamma_{hh} \odot \hat r_t, \quad
        c_t = f \odot c_{t-1} + i \odot g, \quad
        \tau = \tanh(\gamma_c \odot \hat c_t + \beta_c), \quad h_t = o \odot \tau

    Backward, from the gradients :math:`\bar h, \bar c` of :math:`h_t, c_t`. The gradient of
    :math:`z` from that of :math:`\hat z` (layer norm's backward) is

    .. math::

        N(\bar{\hat z}) = s_z \big(\bar{\hat z} - \mathrm{mean}(\bar{\hat z})
            - \hat z \odot \mathrm{mean}(\bar{\hat z} \odot \hat z)\big)

    with the means over the last dimension; then

    .. math::

        \bar n &= \bar h \odot o \odot (1 - \tau^2), \quad
        \bar\gamma_c = \textstyle\sum_b \bar n \odot \hat c_t, \quad
        \bar\beta_c = \textstyle\sum_b \bar n \\
        \bar c' &= \bar c + N(\gamma_c \odot \bar n), \quad \bar c_{t-1} = \bar c' \odot f \\
        \bar a_f &= \bar c' \odot c_{t-1} \odot f (1 - f), \quad
        \bar a_i = \bar c' \odot g \odot i (1 - i), \quad
        \bar a_o = \bar h \odot \tau \odot o (1 - o), \quad
        \bar a_g = \bar c' \odot i \odot (1 - g^2) \\
        \bar p_t &= \bar a, \quad
        \bar\gamma_{hh} = \textstyle\sum_b \bar a \odot \hat r_t, \quad
        \bar r_t = N(\gamma_{hh} \odot \bar a)

    Parameters
    ----------
    eps : float
        The layer norms' :math:`\epsilon`; :meth:`LayerNormLSTM.fused_problem` sends a cell
        whose ``ln_hh`` or ``ln_cell`` has another one to the step-by-step engines.
    """

    joint = False

    def __init__(self, eps: float = EPS) -> None:
        self.eps = eps

    def params(self, cell: Recurrent) -> Tensors:
        """``(gain_hh, gain_cell)`` and ``ln_cell``'s shift if it has one."""
        gain_hh, _ = _gain_shift(cell, "ln_hh")
        gain_cell, shift = _gain_shift(cell, "ln_cell")
        return (gain_hh, gain_cell) if shift is None else (gain_hh, gain_cell, shift)

    def project(self, cell: Recurrent, inputs: Tensor) -> Tensor:
        r""":math:`\mathrm{LN}_{ih}(W_{ih} x_t) + \beta_{hh}` for all steps ``(T, B, 4H)``."""
        _, shift = _gain_shift(cell, "ln_hh")
        i2h, ln_ih = cell._modules["i2h"], cell._modules["ln_ih"]
        assert i2h is not None
        assert ln_ih is not None
        projected: Tensor = ln_ih(i2h(inputs))
        return projected if shift is None else projected + shift

    def forward(
        self, gates: tuple[Tensor, Tensor], state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step: ``(hidden, (c_t,), saved)`` (the equations above)."""
        projected, recurrent = gates
        (cell_state,) = state
        width = cell_state.shape[-1]
        gain_hh, gain_cell, *shift = params
        normal_r, scale_r = _normalise(recurrent, self.eps)
        acts = torch.addcmul(projected, normal_r, gain_hh)  # a, then f, i, o, g in place
        acts[:, : 3 * width].sigmoid_()
        acts[:, 3 * width :].tanh_()
        forget, input_gate, output, candidate = acts.chunk(4, dim=1)
        new_state = torch.addcmul(forget * cell_state, input_gate, candidate)
        normal_c, scale_c = _normalise(new_state, self.eps)
        squashed = (
            normal_c * gain_cell if not shift else torch.addcmul(shift[0], normal_c, gain_cell)
        )
        squashed = squashed.tanh_()
        saved = (acts, cell_state, normal_r, scale_r, normal_c, scale_c, squashed)
        return output * squashed, (new_state,), saved

    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[tuple[Tensor, Tensor], Tensors, Tensors]:
        """Gradients of one step (the equations above)."""
        acts, cell_state, normal_r, scale_r, normal_c, scale_c, squashed = saved
        width = cell_state.shape[-1]
        gain_hh, gain_cell, *shift = params
        forget, input_gate, output, candidate = acts.chunk(4, dim=1)
        d_squashed = d_hidden * output
        d_normal_c = torch.addcmul(d_squashed, d_squashed * squashed, squashed, value=-1)
        d_cell, d_gain_cell = _normalise_backward(d_normal_c, normal_c, scale_c, gain_cell)
        d_cell += d_state[0]
        d_acts = torch.empty_like(acts)
        torch.mul(d_cell, cell_state, out=d_acts[:, :width])
        torch.mul(d_cell, candidate, out=d_acts[:, width : 2 * width])
        torch.mul(d_hidden, squashed, out=d_acts[:, 2 * width : 3 * width])
        sigmoids = acts[:, : 3 * width]  # times s (1 - s) = s - s^2:
        d_acts[:, : 3 * width].mul_(torch.addcmul(sigmoids, sigmoids, sigmoids, value=-1))
        d_candidate = torch.mul(d_cell, input_gate, out=d_acts[:, 3 * width :])
        d_candidate.addcmul_(d_candidate * candidate, candidate, value=-1)  # times 1 - g^2
        d_recurrent, d_gain_hh = _normalise_backward(d_acts, normal_r, scale_r, gain_hh)
        d_shift = [d_normal_c.sum(0) for _ in shift]
        return (d_acts, d_recurrent), (d_cell * forget,), (d_gain_hh, d_gain_cell, *d_shift)

    def reference(
        self, gates: tuple[Tensor, Tensor], state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors]:
        """:func:`layernorm_lstm_pointwise` with ``torch.nn.functional.layer_norm``."""
        projected, recurrent = gates
        (cell_state,) = state
        gain_hh, gain_cell, *shift = params
        normalised = F.layer_norm(recurrent, gain_hh.shape, gain_hh, None, self.eps)

        def norm_cell(c: Tensor) -> Tensor:
            bias = shift[0] if shift else None
            return F.layer_norm(c, gain_cell.shape, gain_cell, bias, self.eps)

        hidden, new_state = layernorm_lstm_pointwise(projected + normalised, cell_state, norm_cell)
        return hidden, (new_state,)


class LayerNormLSTM(Recurrent):
    r"""LSTM with layer normalisation of the recurrent and input projections and the cell.

    .. math::

        a_t &= \mathrm{LN}_{ih}(W_{ih} x_t) + \mathrm{LN}_{hh}(W_{hh} h_{t-1}) \\
        c_t &= \sigma(a_{t,f}) \odot c_{t-1} + \sigma(a_{t,i}) \odot \tanh(a_{t,g}) \\
        h_t &= \sigma(a_{t,o}) \odot \tanh(\mathrm{LN}_{c}(c_t))

    Each :math:`\mathrm{LN}` normalises over its last dimension (all four gate blocks
    together for :math:`a_t`, as in the paper) and has its own gain and shift; the paper's
    bias :math:`b` is the sum of the two shifts, so the linear maps have no bias. The cell
    state carried to the next step is the un-normalised :math:`c_t`.

    Each direction of each layer runs on the fused engine (:class:`LayerNormRule`, the
    normalisations and their backward by hand) unless :meth:`fused_problem` names a layer
    norm the rule cannot read; ``forward_cell`` is the reference path.

    Parameters
    ----------
    input_size, hidden_size : int
    **options
        The driver's keyword options; ``bias=False`` drops the normalisations' shifts.

    Attributes
    ----------
    i2h : nn.Linear
        ``(4 * hidden_size, input_size)``, no bias, blocks f, i, o, g.
    h2h : nn.Linear
        ``(4 * hidden_size, hidden_size)``, no bias.
    ln_ih, ln_hh : nn.LayerNorm
        Over ``4 * hidden_size`` features; gain 1, shift 0 at initialisation.
    ln_cell : nn.LayerNorm
        Over ``hidden_size`` features.
    """

    i2h: nn.Linear
    h2h: nn.Linear
    ln_ih: nn.LayerNorm
    ln_hh: nn.LayerNorm
    ln_cell: nn.LayerNorm
    fast_path = FastPath("fused", "one autograd node per direction, backward by hand")
    step_rule = LayerNormRule()

    def build_cell(
        self, input_size: int, hidden_size: int, *, device: Device = None, dtype: DType = None
    ) -> dict[str, CellPart]:
        """Bias-free ``i2h``, ``h2h`` and the three layer norms."""
        width = 4 * hidden_size

        def norm(features: int) -> nn.LayerNorm:
            return nn.LayerNorm(features, EPS, bias=self.bias, device=device, dtype=dtype)

        return {
            **linear_maps(input_size, hidden_size, width, bias=False, device=device, dtype=dtype),
            "ln_ih": norm(width),
            "ln_hh": norm(width),
            "ln_cell": norm(hidden_size),
        }

    @takes_original_layout
    def forward_cell(self, x: Tensor, hidden: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: x (batch, input_size), hidden and state (batch, hidden_size)."""
        check_forward_cell(self, x, hidden, state)
        gates = self.ln_ih(self.i2h(x)) + self.ln_hh(self.h2h(hidden))  # (B, 4H)
        return layernorm_lstm_pointwise(gates, state, self.ln_cell)

    def fused_problem(self) -> str | None:
        """Why the fused engine cannot read this cell's layer norms, or None.

        :class:`LayerNormRule` applies ``ln_ih`` to all steps at once and reads the gain and
        shift of ``ln_hh`` and ``ln_cell`` itself: each must be a plain ``nn.LayerNorm`` over
        its features, and the last two must have a gain and the rule's ``eps``.
        """
        suffix = cell_suffix(*self.cell_index)
        rule = type(self).step_rule
        for name, features in (("ln_ih", 4 * self.hidden_size), ("ln_hh", 4 * self.hidden_size),
                               ("ln_cell", self.hidden_size)):  # fmt: skip
            part, full_name = self._modules.get(name), name + suffix
            if type(part) is not nn.LayerNorm:
                return f"{full_name} is a {type(part).__name__}, not a plain nn.LayerNorm"
            if tuple(part.normalized_shape) != (features,):
                return (
                    f"{full_name} normalises over {tuple(part.normalized_shape)}, "
                    f"the fused engine over ({features},)"
                )
            if name != "ln_ih" and not part.elementwise_affine:
                return f"{full_name} has no gain (elementwise_affine=False)"
            if name != "ln_ih" and part.eps != rule.eps:
                return f"{full_name} has eps={part.eps}, the fused engine's rule uses {rule.eps}"
        return None
