r"""The fused engine: one direction of one layer as one autograd Function.

The reference engine calls ``forward_cell`` at every step and lets autograd record each of
its operations; at small sizes the bookkeeping, not the arithmetic, sets the time. A cell
family whose step has the usual form

.. math::

    a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \qquad
    (h_t, s_t) = \mathrm{pointwise}(a_t, s_{t-1}; \theta)

can instead declare ``FastPath("fused", ...)`` and a :class:`StepRule`: the element-wise
part, forward and backward, written by hand. :func:`run_fused_direction` then runs a whole
direction of a layer as one :class:`torch.autograd.Function`:

* forward: the input projection of all steps in one matrix product, then per step one
  ``addmm`` and the rule's forward, with nothing recorded;
* backward: per step the rule's backward and one product for :math:`\partial h_{t-1}`; the
  recurrent weight's gradient as **one** product over all steps,
  :math:`\partial W_{hh} = \sum_t \partial a_t^\top h_{t-1}`, the bias's as one sum; the
  input projection's gradients come from autograd as two products over all steps.

That is the GEMM floor of the cell plus the element-wise work. Sequences shorter than
``seq_len`` keep their state past their end and output zeros there, as on the reference
path. A backward that is itself differentiated (``create_graph=True``: ``gradgradcheck``,
gradient penalties) recomputes the direction with the rule's differentiable
:meth:`StepRule.reference` under autograd, so higher derivatives are exact too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from lstm.state import CellState, from_parts, state_parts

if TYPE_CHECKING:
    from lstm.driver import Recurrent

Tensors = tuple[Tensor, ...]
Gates = Any
"""A step's gates: :math:`a_t` ``(batch, G)``, or the pair ``(p_t, r_t)`` for a rule that is
not :attr:`StepRule.joint`."""


class StepRule(ABC):
    r"""The element-wise part of a family's step, with its backward written by hand.

    A family that declares ``FastPath("fused", ...)`` sets a ``step_rule`` class attribute
    to an instance of a subclass. ``gates`` are the pre-activations
    :math:`a_t = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}` of shape ``(batch, G)``;
    ``state`` is the cell's state as a tuple of tensors (:func:`lstm.state.state_parts`);
    ``params`` are the family's parameters besides ``i2h`` and ``h2h``
    (:meth:`params`), e.g. peephole weights.

    :meth:`project` may return more columns than ``h2h`` has rows: the recurrent product is
    added to the first ``G`` and ``gates`` carries the rest unchanged (per-step data that
    depends on the input only, such as an attention map), and ``d_gates`` has the same
    width. A rule with :attr:`joint` False gets the two halves separately, as the pair
    ``gates = (p_t, r_t)`` of the projected input :math:`p_t` (:meth:`project`, row ``t``)
    and the recurrent product :math:`r_t = W_{hh} h_{t-1}`, and returns the pair of their
    gradients as ``d_gates``: for a family that transforms them before adding them (the
    layer-normalised LSTM normalises each).
    """

    joint: ClassVar[bool] = True
    """Whether the rule reads :math:`a_t = p_t + W_{hh} h_{t-1}` (True) or the pair."""

    def bind(self, cell: Recurrent) -> StepRule:
        """The rule for one call on ``cell`` (a layer-cell view): this rule by default.

        A rule whose step depends on the module's settings (a lane choice that samples in
        training, max pooling, ...) returns a copy configured for ``cell`` here.
        """
        return self

    def params(self, cell: Recurrent) -> Tensors:
        """The parameters of ``cell`` (a layer-cell view) the rule reads; none by default."""
        return ()

    def project(self, cell: Recurrent, inputs: Tensor) -> Tensor:
        """:math:`p_t` for all steps at once, ``(seq_len, batch, G)``, under autograd.

        ``inputs`` is the layer's input ``(seq_len, batch, features)``. By default
        ``i2h(x_t)`` plus ``h2h``'s bias, so that :math:`a_t = p_t + W_{hh} h_{t-1}`.
        """
        i2h, h2h = cell._modules["i2h"], cell._modules["h2h"]
        assert isinstance(i2h, torch.nn.Linear)
        assert isinstance(h2h, torch.nn.Linear)
        # One product with both biases: a separate bias add is another pass over (T, B, G).
        biases = [bias for bias in (i2h.bias, h2h.bias) if bias is not None]
        bias = biases[0] + biases[1] if len(biases) == 2 else (biases[0] if biases else None)
        return torch.nn.functional.linear(inputs, i2h.weight, bias)

    @abstractmethod
    def forward(
        self, gates: Gates, state: Tensors, params: Tensors
    ) -> tuple[Tensor, Tensors, Tensors]:
        """One step without autograd: ``(hidden, new_state, saved)``.

        ``saved`` is whatever :meth:`backward` needs for this step.
        """

    @abstractmethod
    def backward(
        self, saved: Tensors, d_hidden: Tensor, d_state: Tensors, params: Tensors
    ) -> tuple[Gates, Tensors, Tensors]:
        """Gradients of one step: ``(d_gates, d_state_before, d_params)``.

        ``d_hidden`` and ``d_state`` are the gradients of the step's outputs; ``d_params``
        has one tensor per parameter (the step's contribution, summed over the batch).
        """

    @abstractmethod
    def reference(self, gates: Gates, state: Tensors, params: Tensors) -> tuple[Tensor, Tensors]:
        """The same step with differentiable torch operations: ``(hidden, new_state)``."""


def fused_problem(cell: Recurrent) -> str | None:
    """Why the fused engine cannot run ``cell``'s family right now, or None.

    A family may define ``fused_problem(self)`` to name a condition of its own (an
    overridden method the rule does not know, ...).
    """
    own = getattr(cell, "fused_problem", None)
    return own() if callable(own) else None


def run_fused_direction(
    cell: Recurrent, layer_input: Tensor, initial: CellState, mask: Tensor | None, reverse: bool
) -> tuple[Tensor, CellState]:
    """One direction of one layer on the fused engine.

    Parameters
    ----------
    cell : Recurrent
        The layer-cell view (:meth:`~lstm.driver.Recurrent.layer_cell`); its ``i2h`` and
        ``h2h`` are plain ``nn.Linear`` maps (:func:`lstm.engines.choose_engine` checks).
    layer_input : Tensor of shape (batch, seq_len, features)
    initial : (hidden, state)
        Hidden ``(batch, H_out)`` and the cell's state.
    mask : Tensor of shape (seq_len, batch, 1), bool, or None
        Which sequences are still running at each step; None when all run to the end.
    reverse : bool
        Run from the last step to the first.

    Returns
    -------
    outputs : Tensor of shape (batch, seq_len, H_out)
        Zero past each sequence's end.
    (hidden, state) : the final state, taken at each sequence's end.
    """
    rule: StepRule = type(cell).step_rule.bind(cell)  # type: ignore[attr-defined]
    h2h = cell._modules["h2h"]
    assert isinstance(h2h, torch.nn.Linear)
    projected = rule.project(cell, layer_input.transpose(0, 1))  # (T, B, G)
    hidden, state = initial
    parts = state_parts(state)
    params = rule.params(cell)
    tensors = (projected, h2h.weight, hidden, *parts, *params)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        outputs, hidden, *new_parts = _FusedDirection.apply(  # type: ignore[no-untyped-call]
            rule, reverse, mask, len(parts), *tensors
        )
    else:
        outputs, hidden, new_parts, _, _ = _scan(
            rule, projected, h2h.weight, hidden, parts, params, mask, reverse, save=False
        )
    return outputs.transpose(0, 1), (hidden, from_parts(new_parts, state))


def _scan(
    rule: StepRule,
    projected: Tensor,
    weight: Tensor,
    hidden: Tensor,
    state: Tensors,
    params: Tensors,
    mask: Tensor | None,
    reverse: bool,
    *,
    save: bool,
) -> tuple[Tensor, Tensor, Tensors, list[Tensors], Tensor | None]:
    """The forward loop: outputs (T, B, H), final hidden and state, and what backward needs.

    With ``save``, returns each step's saved tensors (in time order) and, for ragged
    batches, the hidden input of every step ``(T, B, H)`` (for the recurrent weight's
    gradient; without a mask the outputs are those inputs, shifted by one step).
    """
    # Per-step tensors are collected in lists and stacked once: every indexing or copy
    # inside the loop is one more dispatched operation per step (one more kernel launch
    # on a GPU), which is what the loop's time is made of at small sizes.
    steps = projected.shape[0]
    rows = projected.unbind(0)
    outputs: list[Tensor] = [projected] * steps
    inputs: list[Tensor] | None = [projected] * steps if save and mask is not None else None
    running = mask.unbind(0) if mask is not None else ()
    saved: list[Tensors] = [()] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    weight_t = weight.t()
    width = weight.shape[0]
    wide = projected.shape[-1] > width
    for t in order:
        if inputs is not None:
            inputs[t] = hidden
        if rule.joint and wide:  # extra columns past the gates: added to the first G only
            gates: Gates = rows[t].clone()
            gates[:, :width].addmm_(hidden, weight_t)
        elif rule.joint:
            gates = torch.addmm(rows[t], hidden, weight_t)
        else:
            gates = (rows[t], hidden @ weight_t)
        new_hidden, new_state, saved[t] = rule.forward(gates, state, params)
        if mask is None:
            outputs[t] = hidden = new_hidden
            state = new_state
        else:
            outputs[t] = new_hidden * running[t]  # zero past the end: running is (B, 1)
            hidden = torch.where(running[t], new_hidden, hidden)
            state = tuple(
                torch.where(running[t], n, o) for n, o in zip(new_state, state, strict=True)
            )
    stacked_inputs = torch.stack(inputs) if inputs is not None else None
    return torch.stack(outputs), hidden, state, saved, stacked_inputs


def _step_inputs(outputs: Tensor, hidden: Tensor, reverse: bool) -> Tensor:
    """Without a mask, the hidden input of every step: the initial hidden, then the outputs."""
    first = hidden.unsqueeze(0)
    return torch.cat((outputs[1:], first) if reverse else (first, outputs[:-1]))


def _reference_scan(
    rule: StepRule,
    projected: Tensor,
    weight: Tensor,
    hidden: Tensor,
    state: Tensors,
    params: Tensors,
    mask: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensors]:
    """The forward loop with differentiable operations (for higher derivatives)."""
    outputs: list[Tensor] = []
    order = range(projected.shape[0] - 1, -1, -1) if reverse else range(projected.shape[0])
    for t in order:
        recurrent = hidden @ weight.t()
        if rule.joint and projected.shape[-1] > recurrent.shape[-1]:  # extra columns
            extra = projected.shape[-1] - recurrent.shape[-1]
            gates: Gates = projected[t] + torch.nn.functional.pad(recurrent, (0, extra))
        elif rule.joint:
            gates = projected[t] + recurrent
        else:
            gates = (projected[t], recurrent)
        new_hidden, new_state = rule.reference(gates, state, params)
        if mask is None:
            outputs.append(new_hidden)
            hidden, state = new_hidden, new_state
        else:
            running = mask[t]
            outputs.append(torch.where(running, new_hidden, 0.0))
            hidden = torch.where(running, new_hidden, hidden)
            state = tuple(torch.where(running, n, o) for n, o in zip(new_state, state, strict=True))
    if reverse:
        outputs.reverse()
    return torch.stack(outputs), hidden, state


class _FusedDirection(torch.autograd.Function):
    """:func:`run_fused_direction` under autograd: one node for the whole direction."""

    @staticmethod
    def forward(
        ctx: Any,
        rule: StepRule,
        reverse: bool,
        mask: Tensor | None,
        state_count: int,
        projected: Tensor,
        weight: Tensor,
        hidden: Tensor,
        *rest: Tensor,
    ) -> tuple[Tensor, ...]:
        state, params = tuple(rest[:state_count]), tuple(rest[state_count:])
        outputs, final, new_state, saved, inputs = _scan(
            rule, projected, weight, hidden, state, params, mask, reverse, save=True
        )
        ctx.rule, ctx.reverse, ctx.mask, ctx.state_count = rule, reverse, mask, state_count
        # Everything backward reads goes through save_for_backward (the steps' values
        # stacked over time), so that saved-tensor hooks see all of it: memory counts,
        # torch.autograd.graph.save_on_cpu and other packing hooks.
        stacked = [torch.stack(values) for values in zip(*saved, strict=True)]
        ctx.counts = (len(rest), len(stacked), inputs is not None)
        extra = [inputs] if inputs is not None else []
        ctx.save_for_backward(outputs, projected, weight, hidden, *rest, *stacked, *extra)
        return (outputs, final, *new_state)

    @staticmethod
    def backward(ctx: Any, d_outputs: Tensor, d_hidden: Tensor, *d_state: Tensor) -> Any:
        outputs, projected, weight, hidden, *more = ctx.saved_tensors
        given, kinds, ragged = ctx.counts
        rest, stacked = more[:given], more[given : given + kinds]
        count = ctx.state_count
        state, params = tuple(rest[:count]), tuple(rest[count:])
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference loop
            grads = _reference_backward(ctx, projected, weight, hidden, state, params)
            return (None, None, None, None, *grads(d_outputs, d_hidden, d_state))
        inputs = more[-1] if ragged else _step_inputs(outputs, hidden, ctx.reverse)
        steps_saved = list(zip(*(values.unbind(0) for values in stacked), strict=True))
        if not stacked:
            steps_saved = [()] * outputs.shape[0]
        d_projected, d_weight, d_hidden0, d_state0, d_params = _manual_backward(
            ctx.rule, steps_saved, inputs, ctx.mask, ctx.reverse, weight, params,
            d_outputs, d_hidden, tuple(d_state), projected.shape[-1],
        )  # fmt: skip
        return (None, None, None, None, d_projected, d_weight, d_hidden0, *d_state0, *d_params)


def _manual_backward(
    rule: StepRule,
    saved: list[Tensors],
    inputs: Tensor,
    mask: Tensor | None,
    reverse: bool,
    weight: Tensor,
    params: Tensors,
    d_outputs: Tensor,
    d_hidden: Tensor,
    d_state: Tensors,
    projected_width: int,
) -> tuple[Tensor, Tensor, Tensor, Tensors, list[Tensor]]:
    """The backward loop: per step the rule's backward and one product; then one product."""
    steps, width = d_outputs.shape[0], weight.shape[0]
    wide = projected_width > width
    d_rows = d_outputs.unbind(0)
    running = mask.unbind(0) if mask is not None else ()
    d_projected: list[Tensor] = [d_outputs] * steps
    d_recurrent: list[Tensor] = [d_outputs] * steps
    d_params = [torch.zeros_like(p) for p in params]
    order = range(steps) if reverse else range(steps - 1, -1, -1)  # forward order, reversed
    for t in order:
        if mask is None:
            d_new_hidden, d_new_state = d_rows[t] + d_hidden, d_state
            kept_hidden: Tensor | None = None
            kept_state: Tensors = ()
        else:
            d_new_hidden = (d_rows[t] + d_hidden) * running[t]
            d_new_state = tuple(d * running[t] for d in d_state)
            kept_hidden = torch.where(running[t], 0.0, d_hidden)
            kept_state = tuple(torch.where(running[t], 0.0, d) for d in d_state)
        d_gates, d_state, d_step_params = rule.backward(saved[t], d_new_hidden, d_new_state, params)
        if not rule.joint:
            d_projected[t], d_recurrent[t] = d_gates
        else:
            d_projected[t] = d_gates
            d_recurrent[t] = d_gates[:, :width] if wide else d_gates
        d_hidden = d_recurrent[t] @ weight
        if kept_hidden is not None:
            d_hidden = d_hidden + kept_hidden
            d_state = tuple(d + k for d, k in zip(d_state, kept_state, strict=True))
        for total, step in zip(d_params, d_step_params, strict=True):
            total += step
    stacked = torch.stack(d_projected)  # (T, B, G [+ extra])
    shared = rule.joint and not wide  # then d_recurrent is d_projected
    flat = (stacked if shared else torch.stack(d_recurrent)).reshape(-1, width)
    d_weight = flat.t() @ inputs.reshape(-1, weight.shape[1])  # one product over all steps
    return stacked, d_weight, d_hidden, d_state, d_params


def _reference_backward(
    ctx: Any,
    projected: Tensor,
    weight: Tensor,
    hidden: Tensor,
    state: Tensors,
    params: Tensors,
) -> Any:
    """Gradients by autograd through :func:`_reference_scan`, differentiable themselves."""
    inputs = (projected, weight, hidden, *state, *params)
    needs = ctx.needs_input_grad[4:]
    wanted = [tensor for tensor, need in zip(inputs, needs, strict=True) if need]

    def grads(d_outputs: Tensor, d_hidden: Tensor, d_state: Tensors) -> list[Tensor | None]:
        with torch.enable_grad():
            outputs, final, new_state = _reference_scan(
                ctx.rule, projected, weight, hidden, state, params, ctx.mask, ctx.reverse
            )
            found = torch.autograd.grad(
                (outputs, final, *new_state),
                wanted,
                (d_outputs, d_hidden, *d_state),
                create_graph=True,
                allow_unused=True,
            )
        answers = iter(found)
        return [next(answers) if need else None for need in needs]

    return grads
