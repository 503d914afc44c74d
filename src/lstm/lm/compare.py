"""LSTM against the Array-LSTM variants at one parameter budget: ``python -m lstm compare``.

Rocki (2016) compares cells by bits per character at a fixed number of parameters. Here the
budget is that of the byte model built on ``lstm`` with ``--hidden`` units; every other cell
gets the width whose whole model (embedding, cell and head) comes closest to it, and must land
within :data:`TOLERANCE`. Each cell then trains for the same steps on the same data, with the
same seed, in its own run folder under ``--out``; the table and a chart are written next to
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lstm._atomic import write_figure, write_json
from lstm.lm.config import COMPARE_CELLS, TrainConfig
from lstm.lm.model import build_model, parameter_count
from lstm.lm.run_folder import RunFolder, draw_validation, run_name, validation_series
from lstm.lm.train import train
from lstm.registry import DEFAULT_LANES, get_cell, hidden_multiple, takes_lanes

DEFAULT_CELLS = COMPARE_CELLS
TOLERANCE = 0.05
"""Largest relative difference between a cell's parameter count and the budget."""


@dataclass(frozen=True)
class Entry:
    """One row of the comparison.

    Attributes
    ----------
    cell : str
    hidden : int
        Width chosen for the budget.
    k : int or None
    parameters : int
    validation_bpc, test_bpc : float
    tokens_per_second : float
    """

    cell: str
    hidden: int
    k: int | None
    parameters: int
    validation_bpc: float
    test_bpc: float
    tokens_per_second: float


def count_parameters(config: TrainConfig) -> int:
    """Parameters of the byte model ``config`` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        return parameter_count(build_model(config))


def width_for_budget(config: TrainConfig, budget: int) -> int:
    """The hidden width whose parameter count is closest to ``budget`` (counts grow with it).

    Widths are searched in steps of :func:`lstm.registry.hidden_multiple` of the cell (the
    mLSTM's heads split the width), so every candidate is one the cell accepts.
    """
    step = hidden_multiple(get_cell(config.cell))

    def count(units: int) -> int:
        return count_parameters(replace(config, hidden=units * step))

    low, high = 1, max(2, -(-config.hidden // step))
    while count(high) < budget:
        high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if count(middle) < budget:
            low = middle
        else:
            high = middle
    return step * min((low, high), key=lambda units: abs(count(units) - budget))


def plan(base: TrainConfig, cells: Sequence[str]) -> list[TrainConfig]:
    """One configuration per cell, each sized to the budget of ``lstm`` at ``base.hidden``.

    Raises
    ------
    ValueError
        If a cell cannot come within :data:`TOLERANCE` of the budget.
    """
    budget = count_parameters(replace(base, cell="lstm", k=None))
    configs = []
    for cell in cells:
        lanes = (base.k or DEFAULT_LANES) if takes_lanes(get_cell(cell)) else None
        config = replace(base, cell=cell, k=lanes)
        config = replace(config, hidden=width_for_budget(config, budget))
        count = count_parameters(config)
        if abs(count - budget) > TOLERANCE * budget:
            raise ValueError(
                f"cell {cell!r}: expected a parameter count within {TOLERANCE:.0%} of {budget:,}, "
                f"the closest is {count:,} (hidden {config.hidden})"
            )
        configs.append(config)
    return configs


def compare(
    base: TrainConfig,
    cells: Sequence[str],
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Entry]:
    """Train every cell at the same budget and steps; write ``compare.json`` and ``compare.png``.

    Parameters
    ----------
    base : TrainConfig
        Shared settings; ``hidden`` is the width of the ``lstm`` that sets the budget.
    cells : sequence of str
        Registered cell names.
    out : str or Path
        Folder for one run folder per cell and the results.
    force : bool
        Replace earlier results in ``out``.

    Returns
    -------
    list of Entry
        In the order of ``cells``.
    """
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise ValueError(
            f"--out {folder} already exists and is not empty; pass --force to replace it"
        )
    configs = plan(base, cells)
    entries = []
    for config in configs:
        summary = train(
            config, folder / run_name(config.cell), force=force, progress=progress, log=log
        )
        entries.append(
            Entry(
                config.cell,
                config.hidden,
                config.k,
                summary.parameters,
                summary.validation_bpc,
                summary.test_bpc,
                summary.tokens_per_second,
            )
        )
    results = {"base": base.to_json(), "entries": [entry.__dict__ for entry in entries]}
    write_json(folder / "compare.json", results)
    _chart(folder / "compare.png", entries, folder)
    log(format_table(entries))
    return entries


def format_table(entries: Sequence[Entry]) -> str:
    """A Markdown table of the comparison."""
    lines = [
        "| cell | hidden | k | parameters | validation BPC | test BPC | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        lines.append(
            f"| {entry.cell} | {entry.hidden} | {entry.k or '-'} | {entry.parameters:,} | "
            f"{entry.validation_bpc:.3f} | {entry.test_bpc:.3f} | {entry.tokens_per_second:,.0f} |"
        )
    return "\n".join(lines)


def _chart(path: Path, entries: Sequence[Entry], folder: Path) -> None:
    """Validation curves of every cell (left) and the test BPC bars (right)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4))
    for entry in entries:
        series = validation_series(RunFolder(folder / run_name(entry.cell)).read_metrics())
        draw_validation(curves, series, f"{entry.cell} (h={entry.hidden})")
    curves.set_xlabel("step")
    curves.set_ylabel("validation bits per character")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7)
    bars.bar([entry.cell for entry in entries], [entry.test_bpc for entry in entries])
    bars.set_ylabel("test bits per character")
    for index, entry in enumerate(entries):
        bars.annotate(f"{entry.test_bpc:.3f}", (index, entry.test_bpc), ha="center", va="bottom")
    write_figure(path, figure)
