"""Training: truncated backpropagation through time, checkpoints, exact resume, many processes.

One step of :func:`train` reads window ``(step - 1) % windows`` of every stream (see
:class:`lstm.lm.corpus.Streams`), starting from the state the previous window ended in (reset
to zeros at the start of each pass), and takes one Adam step on the mean cross-entropy.

The run folder and its files are :mod:`lstm.lm.run_folder`'s. Every file is written
atomically, and the training state first, so a run killed at any moment resumes from its last
checkpoint and ends with the same weights as a run never interrupted.
Under ``torchrun`` every process trains on its own streams with ``DistributedDataParallel``
(gloo on the CPU, nccl on CUDA); process 0 alone reports and writes. Every process reads the
checkpoint on resume, so ``--out`` must be a folder they all see.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from lstm.lm.config import TrainConfig
from lstm.lm.corpus import Corpus, Splits, Streams, check_size, load_corpus, split
from lstm.lm.model import VOCABULARY, ByteModel, State, build_model, parameter_count
from lstm.lm.run_folder import STATE_FILE, Checkpoint, RunFolder, load_weights, reading
from lstm.lm.sample import bits_per_character

LOG_EVERY = 10
"""Steps per training-loss record (and per validation report, if ``eval_every`` is smaller)."""


@dataclass(frozen=True)
class Summary:
    """What a finished training run reports.

    Attributes
    ----------
    folder : Path
    step : int
        Steps trained in all (including those before a resume).
    validation_bpc, test_bpc : float
        Bits per character over the whole validation and test splits.
    tokens_per_second : float
        Training throughput of this invocation (all processes together).
    parameters : int
    """

    folder: Path
    step: int
    validation_bpc: float
    test_bpc: float
    tokens_per_second: float
    parameters: int


@dataclass(frozen=True)
class Processes:
    """This process's place in a distributed run (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether ``torch.distributed`` is in use."""
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        """Whether this process reports and writes files."""
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Processes:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as ``torchrun`` sets them."""
        try:
            return cls(
                int(os.environ.get("RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)),
            )
        except ValueError as error:
            raise ValueError(f"expected integer RANK/WORLD_SIZE/LOCAL_RANK ({error})") from None


def resolve_device(choice: str, processes: Processes) -> torch.device:
    """``"auto"`` is CUDA when available; a distributed run uses GPU ``LOCAL_RANK``."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("expected --device cuda to find a CUDA device, but none is available")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", processes.local_rank)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Summary:
    """Train a byte model as ``config`` says, writing the run folder ``out``.

    Everything given is checked before anything is written: a bad configuration, data file or
    checkpoint leaves ``out`` as it was.

    Parameters
    ----------
    config : TrainConfig
    out : str or Path
        Run folder. Must not exist or be empty, unless ``resume`` or ``force``.
    resume : bool
        Continue from the checkpoint in ``out`` (from step 0 if it has none yet). The
        configuration must match the saved one except for the fields in
        :data:`lstm.lm.config.RESUMABLE`, and the data must be the same bytes.
    force : bool
        Start afresh, replacing the run files in ``out`` (other files are left alone).
    progress : bool
        Show a progress bar on stderr (process 0 only).
    log : callable
        Receives the report lines (process 0 only).

    Returns
    -------
    Summary

    Raises
    ------
    ValueError
        For a bad configuration, data or run folder (:class:`CheckpointError` for a damaged or
        incompatible checkpoint).
    OSError
        If the run folder cannot be written.
    """
    if resume and force:
        raise ValueError("expected at most one of --resume and --force, got both")
    processes = Processes.from_environment()
    device = resolve_device(config.device, processes)
    folder = Path(out)
    corpus = load_corpus(config.data)
    streams_total = config.batch_size * processes.world_size
    check_size(corpus, config.seq_len, streams_total)
    splits = split(corpus.data)
    if resume:
        saved = RunFolder(folder).check_resumable(config, corpus, processes.world_size)
    else:
        RunFolder(folder).check_new(force=force)
        saved = None

    torch.manual_seed(config.seed)
    model = build_model(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    torch.manual_seed(config.seed + processes.rank)  # each process draws its own dropout masks
    start, carry = 0, None
    records: list[dict[str, Any]] = []
    pending: list[float] = [0.0, 0]  # training bits summed since the last record, and steps
    if saved is not None:
        start, carry, records, pending = _restore(
            saved, model, optimiser, processes, config.batch_size
        )
    model.to(device)
    _move_optimiser_state(optimiser, device)
    carry = None if carry is None else tuple(tensor.to(device) for tensor in carry)

    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives (and barrier) use the current GPU
    if processes.distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        if processes.leader:
            _prepare_folder(folder, config, corpus, processes, device, start=start, force=force)
        if processes.distributed:
            dist.barrier()
        return _loop(
            config,
            folder,
            model,
            optimiser,
            Streams(splits.train, streams_total, config.seq_len),
            splits,
            corpus,
            processes,
            device,
            start=start,
            carry=carry,
            records=records,
            pending=pending,
            progress=progress and processes.leader,
            log=log if processes.leader else lambda line: None,
        )
    finally:
        if processes.distributed:
            dist.destroy_process_group()


def _restore(
    saved: Checkpoint,
    model: ByteModel,
    optimiser: torch.optim.Optimizer,
    processes: Processes,
    batch_size: int,
) -> tuple[int, State | None, list[dict[str, Any]], list[float]]:
    """Load a training state into the model and optimiser; return where training stands."""
    with reading(STATE_FILE):
        load_weights(model, saved.weights, Path(STATE_FILE))
        optimiser.load_state_dict(saved.optimiser)
        rows = slice(processes.rank * batch_size, (processes.rank + 1) * batch_size)
        torch.set_rng_state(saved.rng["cpu"][processes.rank].clone())
        if "cuda" in saved.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved.rng["cuda"][processes.rank].clone())
        carry = tuple(tensor[..., rows, :].clone() for tensor in saved.carry) or None
        return saved.step, carry, list(saved.metrics), list(saved.pending)


def _move_optimiser_state(optimiser: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimiser.state.values():
        for name, value in state.items():
            if isinstance(value, Tensor) and name != "step":
                state[name] = value.to(device)


def _prepare_folder(
    folder: Path,
    config: TrainConfig,
    corpus: Corpus,
    processes: Processes,
    device: torch.device,
    *,
    start: int,
    force: bool,
) -> None:
    run = RunFolder(folder)
    run.prepare(force=force)
    if start == 0 or not run.has_config():
        run.write_config(config, corpus, processes.world_size, device)


def _loop(
    config: TrainConfig,
    folder: Path,
    model: ByteModel,
    optimiser: torch.optim.Optimizer,
    streams: Streams,
    splits: Splits,
    corpus: Corpus,
    processes: Processes,
    device: torch.device,
    *,
    start: int,
    carry: State | None,
    records: list[dict[str, Any]],
    pending: list[float],
    progress: bool,
    log: Callable[[str], None],
) -> Summary:
    from tqdm import tqdm

    network: nn.Module = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if processes.distributed
        else model
    )
    rows = slice(processes.rank * config.batch_size, (processes.rank + 1) * config.batch_size)
    tokens_per_step = config.batch_size * config.seq_len * processes.world_size
    parameters = parameter_count(model)
    log(
        f"training {config.cell} ({config.layers} x {config.hidden}"
        + (f", k={config.k}" if config.k else "")
        + f", {parameters:,} parameters, impl {config.impl}) on {corpus.description} "
        f"with {processes.world_size} process(es) on {device.type}; run folder {folder}"
    )
    if start:
        log(f"resuming at step {start} of {config.steps}")
    report_every = min(LOG_EVERY, config.eval_every)
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=None if progress else True,  # None: shown on a terminal only
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    model.train()
    started = interval_start = time.perf_counter()
    interval_steps = 0
    last_checkpoint = start
    for step in range(start + 1, config.steps + 1):
        if streams.starts_pass(step):
            carry = None
        inputs, targets = (part.to(device) for part in streams.window(step, rows))
        logits, carry = network(inputs, carry)  # (B, T, 256)
        loss = F.cross_entropy(logits.reshape(-1, VOCABULARY), targets.reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimiser.step()
        carry = tuple(tensor.detach() for tensor in carry)
        mean_loss = loss.detach()
        if processes.distributed:
            dist.all_reduce(mean_loss)
            mean_loss /= processes.world_size
        pending[0] += float(mean_loss) / math.log(2)
        pending[1] += 1
        interval_steps += 1
        evaluate = step % config.eval_every == 0
        if evaluate or step % report_every == 0 or step == config.steps:
            elapsed = time.perf_counter() - interval_start
            record: dict[str, Any] = {
                "step": step,
                "train_bpc": pending[0] / pending[1],
                "tokens_per_second": interval_steps * tokens_per_step / max(elapsed, 1e-9),
            }
            pending[:] = [0.0, 0]
            interval_start, interval_steps = time.perf_counter(), 0
            if evaluate and processes.leader:
                validation = splits.validation[: config.eval_bytes]
                record["validation_bpc"] = bits_per_character(
                    model, validation, config.seq_len, config.batch_size
                )
                log(
                    f"step {step}/{config.steps}: train {record['train_bpc']:.3f} bpc, "
                    f"validation {record['validation_bpc']:.3f} bpc, "
                    f"{record['tokens_per_second']:,.0f} tokens/s"
                )
            records.append(record)
            bar.set_postfix(
                loss=f"{record['train_bpc'] * math.log(2):.3f}",  # nats, as cross_entropy gives
                bpc=f"{record['train_bpc']:.3f}",
                tokens_per_s=f"{record['tokens_per_second']:,.0f}",
            )
        bar.update()
        if step % config.checkpoint_every == 0 or step == config.steps:
            _checkpoint(folder, config, model, optimiser, carry, records, pending, step, processes)
            last_checkpoint = step
    bar.close()
    elapsed = time.perf_counter() - started
    trained = config.steps - start
    if last_checkpoint != config.steps:  # resumed a finished run: nothing trained
        _checkpoint(folder, config, model, optimiser, carry, records, pending, start, processes)
    validation_bpc = test_bpc = math.nan
    if processes.leader:
        validation_bpc = bits_per_character(
            model, splits.validation, config.seq_len, config.batch_size
        )
        test_bpc = bits_per_character(model, splits.test, config.seq_len, config.batch_size)
        final = [
            *records,
            {"step": config.steps, "final_validation_bpc": validation_bpc, "test_bpc": test_bpc},
        ]
        RunFolder(folder).write_results(final, f"{config.cell} on {corpus.description}")
    tokens_per_second = trained * tokens_per_step / elapsed if trained else math.nan
    speed = (
        f"{tokens_per_second:,.0f} tokens/s over this run's {trained} steps in {elapsed:.1f}s"
        if trained
        else "no steps left to train"
    )
    log(
        f"done: step {config.steps}, validation {validation_bpc:.3f} bpc, test {test_bpc:.3f} "
        f"bpc (uniform guessing: 8.000), {speed}"
    )
    return Summary(folder, config.steps, validation_bpc, test_bpc, tokens_per_second, parameters)


def _gather_rows(tensor: Tensor, processes: Processes) -> Tensor:
    """Concatenate every process's ``tensor`` along dim -2 (the batch of a state)."""
    if not processes.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(processes.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=-2)


def _checkpoint(
    folder: Path,
    config: TrainConfig,
    model: ByteModel,
    optimiser: torch.optim.Optimizer,
    carry: State | None,
    records: list[dict[str, Any]],
    pending: list[float],
    step: int,
    processes: Processes,
) -> None:
    """Save the state of every process (all of them gather; process 0 writes)."""
    device = next(model.parameters()).device
    # (world, n) each: one row per process, gathered through the device the backend uses
    rng = {"cpu": _gather_rows(torch.get_rng_state().to(device)[None], processes)}
    if device.type == "cuda":
        cuda_state = torch.cuda.get_rng_state(device).to(device)[None]
        rng["cuda"] = _gather_rows(cuda_state, processes)
    carried = [] if carry is None else [_gather_rows(tensor, processes) for tensor in carry]
    if not processes.leader:
        return
    checkpoint = Checkpoint(
        step=step,
        weights=model.state_dict(),
        optimiser=optimiser.state_dict(),
        rng=rng,
        carry=tuple(carried),
        metrics=records,
        pending=(pending[0], int(pending[1])),
    )
    RunFolder(folder).save_checkpoint(checkpoint, config)
