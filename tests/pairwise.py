"""All-pairs (pairwise) selection of test cases from a full option matrix.

The parity matrices cross axes of two kinds. Some fail independently inside the engines
(layers, directions, ragged lengths, the engine itself): those are ``crossed``, every
combination of their values is kept. The others are normalised before any engine runs
(``batch_first`` is a transpose, an unbatched input a batch of one, a ``PackedSequence`` a
padded batch with lengths, ``bias=False`` a cell without bias terms): for those it is enough
that every value of one axis meets every value of every other axis in some case.

:func:`pairwise` picks such a subset of the full matrix greedily: first one case for each
combination of the crossed axes, then more cases while some pair of values is still
unmet, each time the case that meets the most unmet pairs (ties: the earlier case). It is
deterministic. :func:`unmet_pairs` is the check the tests assert on.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

Case = dict[str, Any]
Pair = tuple[tuple[str, Any], tuple[str, Any]]


def product(**axes: Sequence[Any]) -> list[Case]:
    """Every combination of the axes' values, in order, as dicts."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


def pairs_of(case: Case) -> set[Pair]:
    """The pairs of (axis, value) that one case meets."""
    items = sorted(case.items(), key=lambda item: item[0])
    return set(itertools.combinations(items, 2))


def unmet_pairs(chosen: Sequence[Case], full: Sequence[Case]) -> set[Pair]:
    """Pairs of values that some case of ``full`` meets and no case of ``chosen`` does."""
    wanted = set().union(*(pairs_of(case) for case in full))
    met = set().union(*(pairs_of(case) for case in chosen))
    return wanted - met


def pairwise(full: Sequence[Case], crossed: Sequence[str] = ()) -> list[Case]:
    """A subset of ``full`` that keeps every combination of the ``crossed`` axes and meets
    every pair of values of any two axes that ``full`` meets."""
    chosen: list[Case] = []
    unmet = unmet_pairs([], full)

    def take(candidates: Sequence[Case]) -> None:
        best = max(candidates, key=lambda case: len(pairs_of(case) & unmet))
        chosen.append(best)
        unmet.difference_update(pairs_of(best))

    key = lambda case: tuple(case[name] for name in crossed)  # noqa: E731
    for combination in dict.fromkeys(key(case) for case in full):
        take([case for case in full if key(case) == combination])
    while unmet:
        take(full)
    return chosen


def case_id(case: Case) -> str:
    """A test id: strings as they are, flags by name (``bias`` or ``no_bias``), numbers with
    their name (``num_layers=2``)."""
    words = []
    for name, value in case.items():
        if isinstance(value, bool):
            words.append(name if value else f"no_{name}")
        elif isinstance(value, str):
            words.append(value)
        else:
            words.append(f"{name}={value}")
    return "-".join(words)
