"""Stopping a training run on SIGINT (Ctrl-C) or SIGTERM: after the current step, checkpointed.

While the training loop runs, :class:`StopSignals` replaces the handlers of both signals with
one that only notes the signal. The loop asks :meth:`StopSignals.agreed` after every optimiser
step; once a signal has come it writes a checkpoint, as it does every ``--checkpoint-every``
steps, and raises :class:`Stopped`, which the command line turns into one line (the step and
the command that resumes) and exit status 128 + the signal's number (130, 143). Further signals
are noted and ignored: a step always ends whole (SIGKILL still stops at once; the checkpoints
are atomic).

Under ``torchrun`` the processes may see the signal at different steps (torchrun passes it on
to each), and one that stopped alone would leave the others waiting in the next collective for
ever. So there every process contributes its flag to an all-reduce after every step, and all
of them stop after the same step.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a run with a checkpoint."""


class Stopped(KeyboardInterrupt):
    """Training stopped by a signal, after a checkpoint of step ``step`` was written.

    A ``KeyboardInterrupt``, so that code which lets Ctrl-C through lets this through too.

    Attributes
    ----------
    signal_number : int
    step, steps : int
        The step reached, and the steps the run was to train in all.
    folder : Path
        The run folder holding the checkpoint.
    world_size : int
        The processes of the run (``torchrun --nproc_per_node``).
    leader : bool
        Whether this is the process that reports (process 0).
    """

    def __init__(
        self,
        signal_number: int,
        step: int,
        steps: int,
        folder: Path,
        *,
        world_size: int = 1,
        leader: bool = True,
    ) -> None:
        super().__init__(f"stopped by {signal.Signals(signal_number).name} at step {step}")
        self.signal_number = signal_number
        self.step, self.steps, self.folder = step, steps, folder
        self.world_size, self.leader = world_size, leader

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + self.signal_number

    def describe(self, resume: str | None) -> str:
        """The one line to print: the signal, the step, the folder and ``resume``, a command."""
        return (
            f"{signal.Signals(self.signal_number).name}: stopped at step {self.step} of "
            f"{self.steps}, checkpoint in {self.folder}"
            + (f"; resume with: {resume}" if resume else "")
        )


class StopSignals:
    """A context in which SIGINT and SIGTERM are noted for the training loop to act on.

    Outside the main thread (where Python cannot set handlers) nothing is replaced and no
    signal is ever noted.

    Attributes
    ----------
    received : int or None
        The first signal noted, if any.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._note) for number in SIGNALS}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _note(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number

    def agreed(self, distributed: bool, device: torch.device) -> int | None:
        """The signal to stop on now, the same in every process (``None``: go on).

        Parameters
        ----------
        distributed : bool
            Whether other processes take part: then every process must call this after
            every step (an all-reduce of the signal's number, the largest wins).
        device : torch.device
            Where the process group's backend takes its tensors.
        """
        if not distributed:
            return self.received
        flag = torch.tensor([self.received or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None
