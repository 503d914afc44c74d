"""Every figure of the README's "The main job" and threads paragraphs, and its compare table.

Runs, in this order, each as a fresh ``python -m lstm`` process, and prints what each
printed and how long it took (wall clock):

1. the README's main job as written (``train --out DIR/main --force``, then ``generate
   --checkpoint DIR/main``), torch's default threads;
2. the same training with ``--threads 1``;
3. ``compare`` with its defaults.

Run it on an otherwise idle machine; the README says which figures come from it.

Usage::

    python benchmarks/readme_figures.py --out /tmp/readme-figures
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def timed(argv: list[str]) -> tuple[float, str]:
    """Run ``python -m lstm ARGV``; its wall-clock seconds and what it printed (stdout)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lstm", *argv], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/readme-figures"))
    args = parser.parse_args()
    out = args.out
    trained, printed = timed(["train", "--out", str(out / "main"), "--force"])
    sampled, sample = timed(["generate", "--checkpoint", str(out / "main")])
    print(
        f"# 1. the main job: {trained + sampled:.0f} s ({trained:.0f} s training, "
        f"{sampled:.0f} s sampling)\n{printed}{sample}"
    )
    single, printed = timed(["train", "--out", str(out / "main-1"), "--force", "--threads", "1"])
    print(f"# 2. its training with --threads 1: {single:.0f} s\n{printed}")
    compared, printed = timed(["compare", "--out", str(out / "compare"), "--force", "--quiet"])
    print(f"# 3. compare, defaults: {compared:.0f} s\n{printed}")


if __name__ == "__main__":
    main()
