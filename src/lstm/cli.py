"""The command line: ``python -m lstm COMMAND``.

Commands:

* ``train``: train a byte-level language model (see :mod:`lstm.lm.train`); also under
  ``torchrun --nproc_per_node=N -m lstm train``;
* ``evaluate``: test bits per character of a trained run;
* ``generate``: sample text from a trained run;
* ``compare``: LSTM and the Array-LSTM variants at one parameter budget (:mod:`lstm.lm.compare`);
* ``bench``: speed of the cells beside ``torch.nn.LSTM`` (see :mod:`lstm.bench`).

Invalid input ends with one line on stderr (``python -m lstm train: error: ...``) and exit
status 2, without a traceback; a folder that cannot be written ends with status 1.
``train``, ``evaluate``, ``generate`` and ``compare`` need the ``[cli]`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from lstm import __version__, bench
from lstm.registry import CELLS

EXTRAS = {"safetensors": "cli", "tqdm": "cli", "matplotlib": "plot"}
"""Optional dependencies, and the extra that installs each."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lstm``, with one sub-parser per command."""
    parser = _Parser(prog="python -m lstm", description="lstm: the LSTM you can change")
    parser.add_argument("--version", action="version", version=f"lstm {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    train = commands.add_parser("train", help="train a byte-level language model")
    _model_arguments(train, steps=400)
    train.add_argument("--checkpoint-every", type=int, default=100, metavar="N")
    train.add_argument(
        "--eval-every",
        type=int,
        default=100,
        metavar="N",
        help="steps between validation reports (default 100)",
    )
    train.add_argument(
        "--eval-bytes",
        type=int,
        default=65_536,
        metavar="N",
        help="validation bytes per report; the final report reads all",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder (default runs/CELL-h<HIDDEN>-s<SEED>)",
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out")
    again.add_argument("--force", action="store_true", help="replace the run in --out")
    train.add_argument(
        "--impl",
        choices=["lstm", "torch"],
        default="lstm",
        help="torch: the same model on torch.nn.LSTM (cell lstm only)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="print the test BPC of a trained run")
    evaluate.add_argument("--checkpoint", type=Path, required=True, metavar="DIR")
    evaluate.add_argument(
        "--data", default=None, metavar="FILE", help="default: the run's training data"
    )
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.set_defaults(handler=_evaluate)

    generate = commands.add_parser("generate", help="sample text from a trained run")
    generate.add_argument("--checkpoint", type=Path, required=True, metavar="DIR")
    generate.add_argument("--prompt", default="", metavar="TEXT")
    generate.add_argument("--length", type=int, default=300, metavar="N")
    generate.add_argument("--temperature", type=float, default=0.8, metavar="F")
    generate.add_argument("--seed", type=int, default=0, metavar="N")
    generate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    generate.set_defaults(handler=_generate)

    compare = commands.add_parser(
        "compare", help="LSTM vs the Array-LSTM variants at one parameter budget"
    )
    _model_arguments(compare, steps=300)
    compare.add_argument(
        "--cells",
        nargs="+",
        choices=sorted(CELLS),
        default=None,
        help="default: lstm array stochastic-array",
    )
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), metavar="DIR")
    compare.add_argument("--force", action="store_true", help="replace the results in --out")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(handler=_compare)

    bench_parser = commands.add_parser("bench", help="time the cells beside torch.nn.LSTM")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=_bench)
    return parser


def _model_arguments(parser: argparse.ArgumentParser, *, steps: int) -> None:
    parser.add_argument(
        "--data",
        default="stdlib",
        metavar="FILE",
        help="bytes to model (default: the embedded standard-library corpus)",
    )
    parser.add_argument(
        "--cell",
        default="lstm",
        metavar="NAME",
        help=f"one of {', '.join(sorted(CELLS))} (default lstm)",
    )
    parser.add_argument("--hidden", type=int, default=256, metavar="N")
    parser.add_argument("--layers", type=int, default=1, metavar="N")
    parser.add_argument(
        "--k", type=int, default=None, metavar="N", help="lanes of the Array-LSTM cells (default 4)"
    )
    parser.add_argument("--dropout", type=float, default=0.0, metavar="F")
    parser.add_argument("--seq-len", type=int, default=100, metavar="N")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N")
    parser.add_argument("--steps", type=int, default=steps, metavar="N")
    parser.add_argument("--lr", type=float, default=3e-3, metavar="F")
    parser.add_argument("--seed", type=int, default=0, metavar="N")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _config(args: argparse.Namespace, **fields: Any) -> Any:
    from lstm.lm.config import TrainConfig

    return TrainConfig(
        data=args.data,
        cell=args.cell,
        hidden=args.hidden,
        layers=args.layers,
        k=args.k,
        dropout=args.dropout,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        **fields,
    )


def _train(args: argparse.Namespace) -> None:
    from lstm.lm.train import train

    config = _config(
        args,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_bytes=args.eval_bytes,
        impl=args.impl,
    )
    out = args.out or Path("runs") / f"{config.cell}-h{config.hidden}-s{config.seed}"
    train(config, out, resume=args.resume, force=args.force, progress=not args.quiet)


def _evaluate(args: argparse.Namespace) -> None:
    from lstm.lm.corpus import load_corpus, split
    from lstm.lm.sample import bits_per_character, load_run
    from lstm.lm.train import Processes, resolve_device

    run = load_run(args.checkpoint, resolve_device(args.device, Processes()))
    corpus = load_corpus(args.data if args.data is not None else run.config.data)
    if args.data is None and corpus.sha256 != run.corpus.get("sha256"):
        print(
            f"note: {corpus.description} differs from the data this run trained on "
            f"({run.corpus.get('description')})",
            file=sys.stderr,
        )
    test = split(corpus.data).test
    bpc = bits_per_character(run.model, test, run.config.seq_len, run.config.batch_size)
    print(
        f"test {bpc:.4f} bpc on {test.numel():,} bytes (the last 5% of {corpus.description}); "
        f"{run.config.cell} at step {run.step}"
    )


def _generate(args: argparse.Namespace) -> None:
    import torch

    from lstm.lm.sample import generate, load_run
    from lstm.lm.train import Processes, resolve_device

    run = load_run(args.checkpoint, resolve_device(args.device, Processes()))
    generator = torch.Generator().manual_seed(args.seed)
    sampled = generate(
        run.model,
        args.prompt.encode("utf-8"),
        args.length,
        temperature=args.temperature,
        generator=generator,
    )
    print(args.prompt + sampled.decode("utf-8", errors="replace"))


def _compare(args: argparse.Namespace) -> None:
    from lstm.lm.compare import DEFAULT_CELLS, compare

    config = _config(args, eval_every=max(1, args.steps // 6), checkpoint_every=args.steps)
    compare(
        config, args.cells or DEFAULT_CELLS, args.out, force=args.force, progress=not args.quiet
    )


def _bench(args: argparse.Namespace) -> None:
    bench.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit:  # --help, --version, or a one-line usage error already printed
        return exit.code if isinstance(exit.code, int) else 2
    handler: Callable[[argparse.Namespace], None] = args.handler
    prefix = f"python -m lstm {args.command}: error:"
    try:
        handler(args)
    except ModuleNotFoundError as error:
        if error.name not in EXTRAS:
            raise
        extra = EXTRAS[error.name]
        print(f"{prefix} needs {error.name}: pip install 'pure-lstm[{extra}]'", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{prefix} {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix} interrupted", file=sys.stderr)
        return 130
    return 0
