"""The command line's flags: help text, the README's table, ``--threads``, what ``compare``
refuses, and what ``python -m lstm --help`` imports."""

from __future__ import annotations

import subprocess
import sys

# ------------------------------------------------------------------------------ startup

HEAVY_MODULES = (
    "torch.utils.benchmark",
    "matplotlib",
    "safetensors",
    "lstm.lm.train",
    "lstm.lm.run_folder",
    "lstm.lm.files",
    "lstm.lm.corpus",
    "lstm.lm.sample",
    "lstm.lm.compare",
)
"""Modules only some commands need. torch.utils.benchmark also warns, on a CUDA build of torch
without the CUDA toolkit, that CUDA_HOME is unset. (tqdm is not here: ``import torch``
imports it itself where it is installed.)"""


def test_building_the_parser_imports_no_heavy_module() -> None:
    # A fresh interpreter: this one has imported everything already.
    script = (
        "import sys\nfrom lstm import cli\ncli.build_parser()\nprint(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(done.stdout.split())
    assert "lstm.cli" in loaded
    heavy = {name for name in loaded if name.startswith(HEAVY_MODULES)}
    assert not heavy, f"python -m lstm --help imports {sorted(heavy)}"
