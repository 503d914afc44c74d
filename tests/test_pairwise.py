"""The pairwise selection the parity matrices use (tests/pairwise.py) meets what it claims."""

from __future__ import annotations

from pairwise import case_id, pairwise, product, unmet_pairs


def test_pairs_are_counted_per_pair_of_axes() -> None:
    full = product(a=[0, 1], b=[0, 1], c=[0, 1])
    assert len(unmet_pairs([], full)) == 3 * 4  # 3 pairs of axes, 4 pairs of values each
    assert unmet_pairs(full, full) == set()
    met_by_one = unmet_pairs([{"a": 0, "b": 0, "c": 0}], full)
    assert len(met_by_one) == 12 - 3
    assert (("a", 0), ("b", 0)) not in met_by_one
    assert (("a", 1), ("b", 0)) in met_by_one


def test_pairwise_meets_every_pair_with_fewer_cases() -> None:
    full = product(a=[0, 1], b=[0, 1], c=[0, 1], d=[0, 1])
    chosen = pairwise(full)
    assert unmet_pairs(chosen, full) == set()
    assert len(chosen) < len(full)
    assert all(case in full for case in chosen)


def test_crossed_axes_keep_every_combination() -> None:
    full = product(a=[0, 1, 2], b=[False, True], c=["x", "y", "z"], d=[0, 1])
    chosen = pairwise(full, crossed=["a", "b"])
    assert {(case["a"], case["b"]) for case in chosen} == {
        (a, b) for a in (0, 1, 2) for b in (0, 1)
    }
    assert unmet_pairs(chosen, full) == set()


def test_pairs_that_no_case_can_meet_are_not_asked_for() -> None:
    # "ragged" and "kind" depend on each other: (no ragged, lengths) is no case at all.
    full = [
        case
        for case in product(ragged=[False, True], kind=["full", "lengths"], bias=[False, True])
        if case["ragged"] == (case["kind"] == "lengths")
    ]
    chosen = pairwise(full)
    assert unmet_pairs(chosen, full) == set()
    assert len(chosen) == 4


def test_case_ids_name_flags_and_numbers() -> None:
    case = {"engine": "auto", "num_layers": 2, "bidirectional": True, "bias": False}
    assert case_id(case) == "auto-num_layers=2-bidirectional-no_bias"
