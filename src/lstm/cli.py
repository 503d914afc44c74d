"""The command line: ``python -m lstm COMMAND``.

Commands:

* ``train``: train a byte-level language model (see :mod:`lstm.lm.train`); also under
  ``torchrun --nproc_per_node=N -m lstm train``;
* ``evaluate``: test bits per character of a trained run;
* ``generate``: sample text from a trained run;
* ``compare``: LSTM and the Array-LSTM variants at one parameter budget (:mod:`lstm.lm.compare`);
* ``bench``: speed of the cells beside ``torch.nn.LSTM`` (see :mod:`lstm.bench`).

Invalid input ends with one line on stderr (``python -m lstm train: error: ...``) and exit
status 2, without a traceback; a folder that cannot be written ends with status 1. Ctrl-C
(SIGINT) or SIGTERM during ``train`` ends the current step, writes a checkpoint and prints one
line with the command that resumes; the status is then 130 (SIGINT) or 143 (SIGTERM).
``train``, ``evaluate``, ``generate`` and ``compare`` need the ``[cli]`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from lstm import __version__, bench
from lstm.lm.config import COMPARE_CELLS, TrainConfig, flag, flags
from lstm.registry import CELLS, get_cell

EXTRAS = {"safetensors": "cli", "tqdm": "cli", "matplotlib": "plot"}
"""Optional dependencies, and the extra that installs each."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


class _Refused(argparse.Action):
    """A flag a command does not take, refused with a message that says what to do instead.

    It takes any number of values (so that the refusal, not a stray value, is the error) and
    is left out of the help.
    """

    def __init__(self, option_strings: list[str], dest: str, *, instead: str) -> None:
        super().__init__(
            option_strings,
            argparse.SUPPRESS,
            nargs="*",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        self.instead = instead

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"{option_string}: {self.instead}")


class _CellNames(argparse.Action):
    """Registered cell names, as separate values or comma-separated (``lstm,slstm mlstm``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        names = [name for value in values for name in value.split(",") if name]
        if not names:
            parser.error(f"{option_string}: expected names from {', '.join(sorted(CELLS))}")
        for name in names:
            try:
                get_cell(name)
            except ValueError as error:
                parser.error(f"{option_string}: {error}")
        setattr(namespace, self.dest, names)


class _Given(argparse.Action):
    """Stores a configuration flag's value and notes that the command line gave it.

    ``train --resume`` takes every flag not given from the run's ``config.json``
    (:func:`_resumed_config`), so it must tell a flag given with its default value from one
    left out.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        given: set[str] = getattr(namespace, "given_flags", set())
        namespace.given_flags = given | {self.dest}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lstm``, with one sub-parser per command.

    The flags that configure a model come from :class:`lstm.lm.config.TrainConfig`'s fields
    (their names, types, defaults and help), the others are the commands' own.
    """
    parser = _Parser(prog="python -m lstm", description="lstm: the LSTM you can change")
    parser.add_argument("--version", action="version", version=f"lstm {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_train(commands)
    _add_evaluate(commands)
    _add_generate(commands)
    _add_compare(commands)
    bench_parser = commands.add_parser("bench", help="time the cells beside torch.nn.LSTM")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=_bench)
    return parser


def _add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags ``command`` takes from :class:`TrainConfig`, as its fields describe them."""
    for option in flags(command):
        parser.add_argument(
            option.option_string,
            action=_Given,
            type=option.value_type,
            default=option.default,
            help=option.help,
            metavar=option.metavar,
            choices=option.choices,
        )


def _add_train(commands: _Commands) -> None:
    train = commands.add_parser("train", help="train a byte-level language model")
    _add_config_flags(train, "train")
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="run folder (default runs/CELL-h<HIDDEN>-s<SEED>)",
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, with the flags in its config.json where not given "
        "(--steps, --checkpoint-every, --eval-every, --eval-bytes, --device and --threads "
        "may differ from the run's; any other flag given must match it)",
    )
    again.add_argument("--force", action="store_true", help="replace the run in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)


def _add_evaluate(commands: _Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="print the test BPC of a trained run")
    _add_checkpoint_flag(evaluate)
    evaluate.add_argument(
        "--data", default=None, metavar="FILE", help="default: the run's training data"
    )
    _add_config_flags(evaluate, "evaluate")
    evaluate.set_defaults(handler=_evaluate)


def _add_generate(commands: _Commands) -> None:
    generate = commands.add_parser("generate", help="sample text from a trained run")
    _add_checkpoint_flag(generate)
    generate.add_argument(
        "--prompt",
        default="",
        metavar="TEXT",
        help="the text the sample continues (default: none, a newline)",
    )
    generate.add_argument(
        "--length", type=int, default=300, metavar="N", help="bytes to sample (default %(default)s)"
    )
    generate.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        metavar="F",
        help="below 1: likelier bytes, above 1: more varied (default %(default)s)",
    )
    generate.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seeds the draws: the same run, prompt and seed print the same text, so the "
        "default makes generate deterministic (default %(default)s)",
    )
    generate.add_argument(
        "--raw",
        action="store_true",
        help="write the sampled bytes as they are (default: as text, invalid UTF-8 replaced "
        "and control characters other than newline and tab escaped as \\xNN, so that a "
        "terminal shows them rather than obeys them)",
    )
    _add_config_flags(generate, "generate")
    generate.set_defaults(handler=_generate)


def _add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="DIR", help="the run folder to read"
    )


def _add_compare(commands: _Commands) -> None:
    compare = commands.add_parser(
        "compare", help="LSTM vs the Array-LSTM variants at one parameter budget"
    )
    _add_config_flags(compare, "compare")
    compare.add_argument(
        "--cells",
        nargs="+",
        action=_CellNames,
        default=list(COMPARE_CELLS),
        metavar="NAME",
        help=f"the cells to compare, separated by spaces or commas: {', '.join(sorted(CELLS))} "
        f"(default: {' '.join(COMPARE_CELLS)})",
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("runs/compare"),
        metavar="DIR",
        help="folder of the results and one run folder per cell (default %(default)s)",
    )
    compare.add_argument("--force", action="store_true", help="replace the results in --out")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    _refuse_train_flags(compare)
    compare.set_defaults(handler=_compare)


def _refuse_train_flags(compare: argparse.ArgumentParser) -> None:
    """Refuse ``train``'s flags that ``compare`` cannot honour, rather than ignore them.

    Without this, ``--cell`` was taken for an abbreviation of ``--cells`` or silently dropped.
    """
    compare.add_argument(
        flag("cell"),
        action=_Refused,
        instead=f"compare trains the cells given by --cells (default: {' '.join(COMPARE_CELLS)}), "
        "e.g. --cells lstm slstm",
    )
    reasons = {
        "impl": "compare trains this library's cells",
        "checkpoint_every": "compare checkpoints every cell once, at the end",
        "eval_every": "compare validates every --steps/6 steps, for its chart",
    }
    taken = {option.name for option in flags("compare")}
    for option in flags("train"):
        if option.name not in taken | {"cell"}:
            reason = reasons.get(option.name, "compare does not take it")
            compare.add_argument(
                option.option_string, action=_Refused, instead=f"a flag of train; {reason}"
            )
    compare.add_argument(
        "--resume", action=_Refused, instead="compare always starts new runs; see --force"
    )


def _train(args: argparse.Namespace) -> None:
    from lstm.lm.run_folder import default_path
    from lstm.lm.train import train

    config = TrainConfig.from_flags(vars(args), "train")
    out = args.out or default_path(config)
    if args.resume:
        config = _resumed_config(vars(args), Path(out))
        use_threads(config.threads)  # the run's own count, where --threads was not given
    train(config, out, resume=args.resume, force=args.force, progress=not args.quiet)


def _resumed_config(values: dict[str, Any], out: Path) -> TrainConfig:
    """``train --resume``'s configuration: the flags given, and the rest from ``config.json``.

    The flags a resume may change (``--steps``, ``--threads``, ...) come from the last leg
    (:meth:`lstm.lm.run_folder.RunFolder.latest_config`), the others from ``config.json``.
    A run folder without ``config.json`` (killed before it wrote one) resumes from step 0
    with the flags as given, defaults included. A flag given that shapes the weights and
    differs from the run's is refused later, naming both values
    (:meth:`lstm.lm.run_folder.RunFolder.check_resumable`).
    """
    from lstm.lm.config import RESUMABLE
    from lstm.lm.run_folder import CONFIG_FILE, RunFolder

    if not (out / CONFIG_FILE).is_file():
        return TrainConfig.from_flags(values, "train")
    folder = RunFolder(out)
    first, latest = folder.read_config()[0], folder.latest_config()
    given = values.get("given_flags", set())
    merged = dict(values)
    for option in flags("train"):
        if option.name not in given:
            source = latest if option.name in RESUMABLE else first
            merged[option.name] = getattr(source, option.name)
    return TrainConfig.from_flags(merged, "train")


def _evaluate(args: argparse.Namespace) -> None:
    from lstm.lm.corpus import load_corpus, split
    from lstm.lm.run_folder import load_run
    from lstm.lm.sample import bits_per_character
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
    if test.numel() < 2:
        import torch

        smallest = next(  # the fewest bytes whose test split has 2
            size for size in range(2, 10_000) if split(torch.empty(size)).test.numel() >= 2
        )
        raise ValueError(
            f"{corpus.source} has {corpus.data.numel():,} bytes: evaluate reads its test "
            f"split, the last 5 % ({test.numel()} bytes), and needs at least 2; give a file of "
            f"at least {smallest} bytes with --data"
        )
    bpc = bits_per_character(run.model, test, run.config.seq_len, run.config.batch_size)
    print(
        f"test {bpc:.4f} bpc on {test.numel():,} bytes (the last 5% of {corpus.description}); "
        f"{run.config.cell} at step {run.step}"
    )


def _generate(args: argparse.Namespace) -> None:
    import torch

    from lstm.lm.run_folder import load_run
    from lstm.lm.sample import generate, printable
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
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(args.prompt.encode("utf-8") + sampled)
        sys.stdout.buffer.flush()
        return
    print(printable(args.prompt + sampled.decode("utf-8", errors="replace")))


def _compare(args: argparse.Namespace) -> None:
    from lstm.lm.compare import compare

    config = TrainConfig.from_flags(
        vars(args), "compare", eval_every=max(1, args.steps // 6), checkpoint_every=args.steps
    )
    compare(config, args.cells, args.out, force=args.force, progress=not args.quiet)


def _bench(args: argparse.Namespace) -> None:
    bench.run(args)


AUTO_THREADS = ("train", "evaluate", "generate", "compare")
"""The commands that choose their threads when ``--threads`` is not given
(:func:`lstm.lm.threads.auto_threads`); the training header says what was chosen."""


def _auto_threads() -> int | None:
    """The count :func:`lstm.lm.threads.auto_threads` chooses, or None for torch's own."""
    import torch

    from lstm.lm import threads
    from lstm.lm.threads import auto_threads

    default = torch.get_num_threads()
    count, threads.CHOSEN = auto_threads(default)
    return None if count == default else count


def use_threads(threads: int | None) -> None:
    """Apply ``--threads`` before a command does any work; ``None`` leaves torch's defaults.

    Sets torch's intra-op threads, and its inter-op threads where that is still allowed.

    Raises
    ------
    ValueError
        If ``threads`` is below 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"expected {flag('threads')} >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
    # Inter-op threads can be set once per process, before any inter-op work; torch raises
    # RuntimeError after that (a second main() in one process, a test). This model's work is
    # intra-op, so keeping the earlier value there changes no result.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exit:  # --help, --version, or a one-line usage error already printed
        return exit.code if isinstance(exit.code, int) else 2
    handler: Callable[[argparse.Namespace], None] = args.handler
    prefix = f"python -m lstm {args.command}: error:"
    try:
        threads = getattr(args, "threads", None)
        from lstm.lm import threads as chosen

        chosen.CHOSEN = None  # a previous command's choice (in one process) is not this one's
        if threads is None and args.command in AUTO_THREADS:
            threads = _auto_threads()
        use_threads(threads)
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
    except KeyboardInterrupt as interrupt:
        from lstm.lm.stop import Stopped

        if not isinstance(interrupt, Stopped):  # before or after the training loop
            print(f"{prefix} interrupted", file=sys.stderr)
            return 130
        if interrupt.leader:
            resume = resume_command(arguments, interrupt.world_size)
            print(interrupt.describe(resume if args.command == "train" else None), file=sys.stderr)
        return interrupt.exit_status
    return 0


def resume_command(arguments: list[str], world_size: int = 1) -> str:
    """The shell command that continues ``python -m lstm ARGUMENTS``: ``--resume``, no ``--force``.

    Parameters
    ----------
    arguments : list of str
        The arguments of ``train`` as given (after ``python -m lstm``).
    world_size : int
        Processes of the run: above 1 the command starts them with
        ``torchrun --nproc_per_node=N`` (on one machine; several need torchrun's own flags).

    Returns
    -------
    str
        Quoted for a POSIX shell.
    """
    # argparse takes any unambiguous prefix of a flag too (--forc, --res)
    kept = [argument for argument in arguments if not _abbreviates(argument, "--force")]
    if not any(_abbreviates(argument, "--resume") for argument in kept):
        kept.append("--resume")
    launcher = ["torchrun", f"--nproc_per_node={world_size}"] if world_size > 1 else ["python"]
    return shlex.join([*launcher, "-m", "lstm", *kept])


def _abbreviates(argument: str, flag: str) -> bool:
    return len(argument) >= 3 and flag.startswith(argument)
