"""Out-of-memory errors: recovery in training and evaluation, and fault injection to test it.

A CUDA out-of-memory error in a training micro-step does not end the run. The loop
runs each optimizer step as an *attempt* (`OutOfMemoryRecovery.attempts`); when one
runs out of memory, its partial gradients and tensors are released, the cache is
emptied, the micro-batch is halved and the step is retried on the same samples.
Each loader batch is then cut into pieces of the new micro-batch size, so the step
accumulates twice as many micro-steps over the same samples, each weighted by its
share: the effective batch and the math stay the same, and the weights equal those
of a run that used the smaller micro-batch with more accumulation from the start.
torch's random generators are put back before a retry, so dropout draws the same masks.
The new size rides in every checkpoint (`state_key = "micro_batch"`), so a resume
does not run out of memory again, and `summary.json` counts the recoveries.

Under several processes every rank changes together: each attempt ends with one
agreement (a max over ranks of an "out of memory" flag, on CPU) right before the
micro-step whose backward all-reduces the gradients, so a rank that ran out never
leaves the others waiting in an all-reduce. An error inside that last micro-step
itself cannot be retried across ranks (the others are already inside DDP's
all-reduce); it stops the run with the overrides that avoid it.

Evaluation has no collective per batch: an out-of-memory error there halves the
evaluation batch on that rank and retries the rest of the batch.

Recovery is on where memory can run out (CUDA, MPS) and under fault injection. Tests
inject a real `torch.OutOfMemoryError` with an environment variable, not a config key:

    BRICKWORK_INJECT_OOM="3:1"        # step 3 (counted from 1), micro-step 1 (from 0)
    BRICKWORK_INJECT_OOM="1:0,1"      # step 1, micro-step 0, on rank 1 only
    BRICKWORK_INJECT_OOM="eval:0"     # the first evaluation forward of the process
    BRICKWORK_INJECT_OOM="1:0;1:0"    # entries separated by ';', each fires once
"""

from __future__ import annotations

import gc
import logging
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from brickwork.batch import Batch, batch_size_of
from brickwork.distributed import get_rank, get_world_size, max_across_ranks
from brickwork.errors import BrickworkError

log = logging.getLogger("brickwork")

INJECT_VARIABLE = "BRICKWORK_INJECT_OOM"
REPORT_FILE = "oom_report.txt"


class MemoryExhaustedError(BrickworkError):
    """Out of memory even at a micro-batch of one sample (or where no retry is possible)."""


class _PeerOutOfMemory(Exception):
    """Another rank ran out of memory in this attempt: retry together."""


@dataclass(frozen=True)
class _Injection:
    where: str  # "train" or "eval"
    step: int  # training: the optimizer step, from 1; eval: the evaluation forward, from 0
    micro_step: int
    rank: int | None


def parse_injections(text: str) -> list[_Injection]:
    """`STEP:MICRO_STEP[,RANK]` or `eval:N[,RANK]` entries, separated by `;` or spaces."""
    found = []
    for entry in text.replace(";", " ").split():
        place, _, rank = entry.partition(",")
        first, _, second = place.partition(":")
        try:
            if first == "eval":
                found.append(_Injection("eval", int(second), 0, int(rank) if rank else None))
            else:
                found.append(
                    _Injection("train", int(first), int(second), int(rank) if rank else None)
                )
        except ValueError:
            raise BrickworkError(
                f"{INJECT_VARIABLE}={text!r}: cannot read {entry!r}; expected STEP:MICRO_STEP"
                "[,RANK] or eval:N[,RANK], e.g. 3:0 or 3:0,1"
            ) from None
    return found


class FaultInjection:
    """Raises a real `torch.OutOfMemoryError` where `BRICKWORK_INJECT_OOM` says, once each."""

    def __init__(self, text: str | None = None) -> None:
        text = os.environ.get(INJECT_VARIABLE, "") if text is None else text
        self.pending = parse_injections(text)
        self.num_eval_forwards = 0

    def __bool__(self) -> bool:
        return bool(self.pending)

    def maybe_raise(self, where: str, step: int, micro_step: int = 0) -> None:
        """Raise for the first pending entry at this place (and rank), and consume it."""
        for entry in self.pending:
            if (entry.where, entry.step, entry.micro_step) == (where, step, micro_step) and (
                entry.rank is None or entry.rank == get_rank()
            ):
                self.pending.remove(entry)
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory (injected by {INJECT_VARIABLE} at {where} "
                    f"{step}:{micro_step} on rank {get_rank()})"
                )


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA (or MPS) allocation failure, told by its type, never by its wording."""
    return isinstance(error, torch.OutOfMemoryError)


def split_into_pieces(batch: Batch, size: int) -> list[Batch]:
    """Cut a batch along its first dimension into pieces of `size` samples (views, no copy).

    Tensors (and lists) whose length is the batch size are cut; anything else is shared.
    """
    total = batch_size_of(batch)
    if size >= total:
        return [batch]
    return [
        _slice(batch, start, min(start + size, total), total) for start in range(0, total, size)
    ]


def _slice(value: Any, start: int, stop: int, total: int) -> Any:
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.dim() > 0 and value.shape[0] == total else value
    if isinstance(value, Mapping):
        return {k: _slice(v, start, stop, total) for k, v in value.items()}
    if isinstance(value, tuple):
        return type(value)(_slice(v, start, stop, total) for v in value)
    if isinstance(value, list):
        if len(value) == total and not any(isinstance(v, torch.Tensor) for v in value):
            return value[start:stop]
        return [_slice(v, start, stop, total) for v in value]
    return value


def release_memory() -> None:
    """Collect the failed attempt's tensors (reference cycles included) and empty the cache."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class OutOfMemoryRecovery:
    """Halves the micro-batch on an out-of-memory error and retries; kept in checkpoints.

    Example:
        >>> for attempt in recovery.attempts(micro_batches, state.step):
        ...     with attempt:
        ...         for index, batch in enumerate(attempt.micro_batches):
        ...             attempt.before_micro_step(index)
        ...             ...  # forward, backward
    """

    state_key = "micro_batch"

    def __init__(
        self,
        loader_batch_size: int,
        device: torch.device,
        report_dir: Path | None = None,
        injection: FaultInjection | None = None,
    ) -> None:
        self.loader_batch_size = loader_batch_size
        self.injection = injection if injection is not None else FaultInjection()
        # Only where memory can run out, or under injection: on the CPU the attempt costs
        # nothing, not even the random-state copy a retry needs.
        self.active = device.type in ("cuda", "mps") or bool(self.injection)
        self.report_dir = report_dir
        self.micro_batch_size: int | None = None  # None: the loader's batch, uncut
        self.eval_batch_size: int | None = None  # None: the loader's evaluation batch
        self.num_recoveries = 0
        self.num_eval_recoveries = 0
        self.failures: list[dict[str, Any]] = []

    def attempts(self, micro_batches: list[Batch], step: int) -> Iterator[_Attempt]:
        """One attempt at the step `step + 1`, and one more after each recovered error."""
        rng = _capture_torch_rng() if self.active else None
        while True:
            pieces = self.cut(micro_batches)
            attempt = _Attempt(self, pieces, step + 1)
            yield attempt
            if not attempt.failed or rng is None:
                return
            _restore_torch_rng(rng)  # the retry draws the same dropout masks

    def cut(self, micro_batches: list[Batch]) -> list[Batch]:
        """The loader's batches cut to the current micro-batch size."""
        size = self.micro_batch_size
        if size is None or size >= self.loader_batch_size:
            return micro_batches
        return [piece for batch in micro_batches for piece in split_into_pieces(batch, size)]

    def halve(self, step: int, micro_step: int, error: BaseException) -> None:
        """Halve the micro-batch, or raise `MemoryExhaustedError` at one sample."""
        old = self.micro_batch_size or self.loader_batch_size
        self._record("train", step, micro_step, old, error)
        if old <= 1:
            self._give_up(f"step {step}: out of memory with a micro-batch of 1 sample")
        new = -(-old // 2)
        self.micro_batch_size, self.num_recoveries = new, self.num_recoveries + 1
        per_batch = -(-self.loader_batch_size // new)
        log.warning(
            "out of memory at step %d, micro-step %d: micro-batch %d -> %d, each loader batch "
            "of %d now in %d micro-steps (same samples, same effective batch); retrying the step",
            step,
            micro_step,
            old,
            new,
            self.loader_batch_size,
            per_batch,
        )

    def evaluate_in_pieces(self, batch: Batch, evaluate: Callable[[Batch], None]) -> None:
        """Run `evaluate` over `batch` in pieces; out of memory halves the pieces and retries.

        Pieces already evaluated stay counted: evaluation keeps no graph, so each piece
        stands alone.
        """
        total, done = batch_size_of(batch), 0
        while done < total:
            size = min(self.eval_batch_size or total, total - done)
            piece = batch if size == total else _slice(batch, done, done + size, total)
            failed = False
            try:
                if self.injection:
                    index = self.injection.num_eval_forwards
                    self.injection.num_eval_forwards += 1
                    self.injection.maybe_raise("eval", index)
                evaluate(piece)
            except torch.OutOfMemoryError as error:
                if not self.active:
                    raise
                self._record("eval", -1, 0, size, error)
                if size <= 1:
                    self._give_up("evaluation: out of memory with a batch of 1 sample")
                failed = True
            if failed:  # outside `except`: the error and its frames are gone by now
                release_memory()
                self.eval_batch_size, self.num_eval_recoveries = (
                    -(-size // 2),
                    self.num_eval_recoveries + 1,
                )
                log.warning("out of memory in evaluation: batch %d -> %d", size, -(-size // 2))
                continue
            done += size

    def summary(self) -> dict[str, Any]:
        """What `summary.json` records under `out_of_memory`."""
        return {
            "num_recoveries": self.num_recoveries,
            "micro_batch_size": self.micro_batch_size or self.loader_batch_size,
            "num_eval_recoveries": self.num_eval_recoveries,
            "eval_batch_size": self.eval_batch_size,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "micro_batch_size": self.micro_batch_size,
            "eval_batch_size": self.eval_batch_size,
            "num_recoveries": self.num_recoveries,
            "num_eval_recoveries": self.num_eval_recoveries,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.micro_batch_size = state.get("micro_batch_size")
        self.eval_batch_size = state.get("eval_batch_size")
        self.num_recoveries = int(state.get("num_recoveries", 0))
        self.num_eval_recoveries = int(state.get("num_eval_recoveries", 0))
        if self.micro_batch_size is not None:
            log.info(
                "resumed with micro-batch %d (recovered from out of memory)", self.micro_batch_size
            )

    def _record(
        self, where: str, step: int, micro_step: int, size: int, error: BaseException
    ) -> None:
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None
        self.failures.append(
            {
                "where": where,
                "step": step,
                "micro_step": micro_step,
                "size": size,
                "phase": failed_phase(error),
                "peak_bytes": peak,
            }
        )
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def _give_up(self, what: str) -> None:
        report = write_memory_report(self.report_dir, self.failures)
        raise MemoryExhaustedError(
            f"{what}; {report}. Fixes, most effective first: trainer.precision=bf16, "
            "a smaller data.eval_batch_size, activation checkpointing in the model, "
            "trainer.channels_last=true, PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
        )


def _capture_torch_rng() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """torch's generators (CPU, CUDA), which dropout draws from: a few µs, no device sync.

    Python's and NumPy's generators are left alone: a step rarely draws from them, and
    copying their state every step would cost more than the rest of the attempt.
    """
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _restore_torch_rng(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


class _Attempt:
    """One try at an optimizer step: a context manager that swallows a recoverable OOM."""

    def __init__(self, recovery: OutOfMemoryRecovery, micro_batches: list[Batch], step: int):
        self.recovery, self.micro_batches, self.step = recovery, micro_batches, step
        self.micro_step = 0
        self.agreed = False  # this attempt's flag was exchanged with the other ranks
        self.failed = False

    def before_micro_step(self, index: int) -> None:
        """Injected faults; under DDP, before the last micro-step, the agreement (a collective).

        The last micro-step's backward all-reduces gradients: every rank must know first
        that no rank ran out of memory, or a rank that did would leave the rest waiting.
        """
        self.micro_step = index
        if not self.recovery.active:
            return
        if self.recovery.injection:
            self.recovery.injection.maybe_raise("train", self.step, index)
        if index == len(self.micro_batches) - 1 and get_world_size() > 1:
            self.agreed = True
            if max_across_ranks(0):
                raise _PeerOutOfMemory

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if error is None or not self.recovery.active:
            return False
        peer = isinstance(error, _PeerOutOfMemory)
        if not (peer or is_out_of_memory(error)):
            return False
        if get_world_size() > 1 and not peer:
            if self.agreed:  # the others are inside the gradient all-reduce: no way back
                raise MemoryExhaustedError(
                    f"rank {get_rank()}: out of memory at step {self.step} in the micro-step "
                    "whose backward all-reduces gradients, which cannot be retried across "
                    f"ranks; halve data.batch_size and double trainer.accumulate_grad_batches"
                ) from error
            max_across_ranks(1)  # meets the others' agreement: everyone retries
        self.failed = True
        if tb is not None:
            traceback.clear_frames(tb)  # the failed forward's activations live in these frames
        self.recovery.halve(self.step, self.micro_step, error)
        release_memory()
        return True


def failed_phase(error: BaseException) -> str:
    """Where an error was raised: `backward`, `optimizer` or `forward`, from its frames."""
    names = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    if "backward" in names or "_engine_run_backward" in names:
        return "backward"
    if "step" in names:
        return "optimizer"
    return "forward"


def write_memory_report(report_dir: Path | None, failures: Sequence[dict[str, Any]]) -> str:
    """Peak memory by phase of each failed attempt, CUDA's memory summary, ranked fixes.

    Returns where the report went, for the error message.
    """
    lines = ["brickwork out-of-memory report", "", "attempts that ran out of memory:"]
    for row in failures:
        peak = "n/a" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.1f} MiB"
        lines.append(
            f"  {row['where']} step {row['step']} micro-step {row['micro_step']}: "
            f"batch {row['size']}, failed in {row['phase']}, peak allocated {peak}"
        )
    lines += [
        "",
        "fixes, most effective first:",
        *(f"  {i}. {fix}" for i, fix in enumerate(FIXES, 1)),
    ]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        lines += ["", torch.cuda.memory_summary()]
    else:
        lines += ["", "torch.cuda.memory_summary(): no CUDA device in use"]
    text = "\n".join(lines) + "\n"
    if report_dir is None:
        return "report:\n" + text
    path = report_dir / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return f"report in {path}"


FIXES = (
    "trainer.precision=bf16: activations take half the memory (on Ampere or newer GPUs)",
    "a smaller data.eval_batch_size: evaluation keeps its batch's outputs for the metrics",
    "activation checkpointing (torch.utils.checkpoint) in the model's largest blocks",
    "trainer.channels_last=true: convolutions need fewer layout copies",
    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: less fragmentation of the cache",
)
