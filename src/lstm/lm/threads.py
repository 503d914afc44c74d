"""The CPU threads a command runs on when ``--threads`` is not given: fewer on busy cores.

Every parallel step of a model waits for its slowest thread, so a thread that has to share a
core with other work stalls all of them: on a 2-core machine kept busy by other processes,
training on torch's default two threads ran eight times slower than on one. Without
``--threads``, :func:`auto_threads` takes torch's own count and lowers it by the cores that
other work keeps busy right now (the runnable tasks the kernel counts in ``/proc/loadavg``,
sampled a few times), never below one; on an idle machine it is torch's own count.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

CHOSEN: str | None = None
"""What the command line chose without ``--threads``, and why (:func:`auto_threads`'s line),
set by :mod:`lstm.cli` before the command runs; the training header prints it."""

LOADAVG = Path("/proc/loadavg")
"""Linux's load file: its fourth field is ``running/total`` tasks, this process's included."""


def busy_cores(samples: int = 3, interval: float = 0.02) -> float | None:
    """How many cores other work keeps busy now: runnable tasks but this one, the median of
    ``samples`` reads ``interval`` seconds apart; None where the kernel does not say."""
    counts = []
    for index in range(samples):
        try:
            running = LOADAVG.read_text().split()[3].split("/")[0]
            counts.append(max(0, int(running) - 1))
        except (OSError, IndexError, ValueError):
            return None
        if index + 1 < samples:
            time.sleep(interval)
    return statistics.median(counts)


def choose_threads(default: int, cores: int, busy: float) -> int:
    """``default`` threads, less the cores others keep busy (of ``cores``), at least 1.

    Parameters
    ----------
    default : int
        Torch's own count (usually one per physical core).
    cores : int
        The cores this process may run on.
    busy : float
        Cores that other work keeps busy.

    Returns
    -------
    int
    """
    free = int(cores - busy + 0.5)
    return max(1, min(default, free))


def auto_threads(default: int) -> tuple[int, str]:
    """The thread count for a command without ``--threads``, and a line saying why.

    Parameters
    ----------
    default : int
        Torch's own count (``torch.get_num_threads()``).

    Returns
    -------
    (int, str)
        The count, and e.g. ``"1 of 2 cores (other work keeps 2 busy); --threads N to
        choose"``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = busy_cores()
    if busy is None or not cores:
        return default, f"{default} (torch's default); --threads N to choose"
    count = choose_threads(default, cores, busy)
    why = "the cores are free" if busy < 0.5 else f"other work keeps {busy:g} busy"
    return count, f"{count} of {cores} cores ({why}); --threads N to choose"
