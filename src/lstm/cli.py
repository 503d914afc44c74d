"""The command line: ``python -m lstm COMMAND``.

Commands:

* ``bench``: speed of the cells beside ``torch.nn.LSTM`` (see :mod:`lstm.bench`);
* ``demo``: a short training run (see :mod:`lstm.demo`).

Invalid values end with one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

from lstm import __version__, bench, demo


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lstm`` with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m lstm", description="lstm: the LSTM you can change"
    )
    parser.add_argument("--version", action="version", version=f"lstm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="time the cells beside torch.nn.LSTM")
    bench.add_arguments(bench_parser)
    commands.add_parser(
        "demo", help="train a small byte model (python -m lstm demo --help)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        demo.main(argv[1:])
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        bench.run(args)
    except (ValueError, RuntimeError) as error:
        print(f"python -m lstm {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
