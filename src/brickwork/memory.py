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

Under several processes every rank changes together, with no deadlock wherever one
rank ran out: a rank that fails first completes its side of DDP's gradient all-reduce
with zero-weight gradients (`brickwork.gradient_sync`), then each attempt ends with one
agreement (a max over ranks of an "out of memory" flag, on CPU) right after the
micro-step whose backward all-reduces the gradients, and all ranks retry together.
That covers an error in any micro-step, the synchronising one included, forward or
backward, and costs one flag per step, as a stop agreement would.

Evaluation has no collective per batch: an out-of-memory error there halves the
evaluation batch on that rank and retries the rest of the batch.

Recovery is on where memory can run out (CUDA, MPS) and under fault injection
(`brickwork.fault_injection`). Tests inject a real `torch.OutOfMemoryError` with an
environment variable, not a config key:

    BRICKWORK_INJECT_OOM="3:1"           # step 3 (counted from 1), micro-step 1 (from 0)
    BRICKWORK_INJECT_OOM="1:0,1"         # step 1, micro-step 0, on rank 1 only
    BRICKWORK_INJECT_OOM="2:1:backward"  # inside the backward of that micro-step
    BRICKWORK_INJECT_OOM="4-20/2:0"      # steps 4, 6, ..., 20: once each
    BRICKWORK_INJECT_OOM="eval:0"        # the run's first evaluation forward (from 0)
    BRICKWORK_INJECT_OOM="eval:0-7,1"    # its first 8, on rank 1 (validation, then test)
    BRICKWORK_INJECT_OOM="1:0;1:0"       # entries separated by ';', each fires once

A micro-step index counts the pieces of the current attempt (after a halving a step
has more of them); `-1` is the last, the one whose backward all-reduces gradients.
"""

from __future__ import annotations

import gc
import logging
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from brickwork.batch import Batch, batch_size_of
from brickwork.distributed import get_world_size, max_across_ranks
from brickwork.errors import BrickworkError
from brickwork.fault_injection import FaultInjection
from brickwork.gradient_sync import GradientSyncCompletion
from brickwork.memory_profile import PhasePeaks

log = logging.getLogger("brickwork")

REPORT_FILE = "oom_report.txt"


class MemoryExhaustedError(BrickworkError):
    """Out of memory even at a micro-batch of one sample (or where no retry is possible)."""


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
        self.completion: GradientSyncCompletion | None = None
        self.phases = PhasePeaks(device)

    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        rejoin: Callable[[Any], object],
    ) -> None:
        """Prepare for errors in `model`'s steps: the injection's backward hook, and under
        DDP the bookkeeping a failing rank needs to complete the gradient all-reduce.

        `rejoin(sample)` runs a zero-weight forward and backward through `model`; the
        optimizer's step hooks mark a phase of the memory report.
        """
        if not self.active:
            return
        self.phases.attach(model, optimizer)  # peak memory by phase, after a first error
        if self.injection:
            self.injection.install(model)
        inner = getattr(model, "_orig_mod", model)  # through a torch.compile wrapper
        if isinstance(inner, torch.nn.parallel.DistributedDataParallel):
            self.completion = GradientSyncCompletion(model, rejoin)

    def attempts(self, micro_batches: list[Batch], step: int) -> Iterator[Attempt]:
        """One attempt at the step `step + 1`, and one more after each recovered error."""
        rng = _capture_torch_rng() if self.active else None
        while True:
            pieces = self.cut(micro_batches)
            attempt = Attempt(self, pieces, step + 1)
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

    def halve(self, step: int, micro_step: int, phase: str) -> None:
        """Halve the micro-batch, or raise `MemoryExhaustedError` at one sample.

        `phase` is where it ran out: `forward`, `backward`, or `on another rank`.
        """
        old = self.micro_batch_size or self.loader_batch_size
        self._record("train", step, micro_step, old, phase)
        if old <= 1:
            self._give_up(f"step {step}: out of memory with a micro-batch of 1 sample")
        new = -(-old // 2)
        self.micro_batch_size, self.num_recoveries = new, self.num_recoveries + 1
        per_batch = -(-self.loader_batch_size // new)
        log.warning(
            "out of memory at step %d, micro-step %d (%s): micro-batch %d -> %d, each loader batch "
            "of %d now in %d micro-steps (same samples, same effective batch); retrying the step",
            step,
            micro_step,
            phase,
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
                with self.phases.profiled("evaluation"):
                    evaluate(piece)
            except torch.OutOfMemoryError:
                if not self.active:
                    raise
                self._record("eval", -1, 0, size, "evaluation")
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

    def _record(self, where: str, step: int, micro_step: int, size: int, phase: str) -> None:
        peak = self.phases.meter.peak if self.phases.meter is not None else None
        self.failures.append(
            {
                "where": where,
                "step": step,
                "micro_step": micro_step,
                "size": size,
                "phase": phase,
                "peak_bytes": peak,
            }
        )
        self.phases.start_profile()  # the attempts that follow are measured by phase

    def _give_up(self, what: str) -> None:
        report = write_memory_report(self.report_dir, self.failures, self.phases.describe())
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


class Attempt:
    """One try at an optimizer step: a context manager that swallows a recoverable OOM.

    Under DDP its exit is the step's agreement: after the micro-step whose backward
    all-reduced the gradients (or after a failed rank completed its side of it), one
    flag over all ranks says whether anyone ran out; if so, every rank retries.
    """

    def __init__(self, recovery: OutOfMemoryRecovery, micro_batches: list[Batch], step: int):
        self.recovery, self.micro_batches, self.step = recovery, micro_batches, step
        self.micro_step = 0
        self.failed = False

    def before_micro_step(self, index: int) -> None:
        """Injected faults; under DDP, start watching what this micro-step asks of DDP."""
        self.micro_step = index
        recovery = self.recovery
        if not recovery.active:
            return
        if recovery.completion is not None:
            recovery.completion.arm()
        if recovery.injection:
            recovery.injection.maybe_raise("train", self.step, index, len(self.micro_batches))

    def __enter__(self) -> Attempt:
        self._profile = self.recovery.phases.profiled()
        self._profile.__enter__()  # the CPU tensor profile, once an error started it
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._profile.__exit__(None, None, None)
        recovery = self.recovery
        if not recovery.active or (error is not None and not is_out_of_memory(error)):
            return False
        if error is not None:
            phase = failed_phase(error)
            if tb is not None:
                traceback.clear_frames(tb)  # the failed forward's activations live here
            release_memory()
            if recovery.completion is not None:  # the others wait in the all-reduce
                recovery.completion.complete(self._one_sample())
        elif get_world_size() == 1:
            return False
        if get_world_size() > 1 and not max_across_ranks(int(error is not None)):
            return False  # the step's agreement: nobody ran out of memory
        self.failed = True
        if error is None:
            recovery.halve(self.step, self.micro_step, "on another rank")
            release_memory()
        else:
            recovery.halve(self.step, self.micro_step, phase)
        return True

    def _one_sample(self) -> Batch | None:
        """One sample of this step, for a zero-weight pass (None: the rank has none)."""
        return split_into_pieces(self.micro_batches[0], 1)[0] if self.micro_batches else None


def failed_phase(error: BaseException) -> str:
    """Where an error was raised: `backward`, `optimizer` or `forward`, from its frames."""
    names = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    if "backward" in names or "_engine_run_backward" in names:
        return "backward"
    if "step" in names:
        return "optimizer"
    return "forward"


def write_memory_report(
    report_dir: Path | None, failures: Sequence[dict[str, Any]], phases: Sequence[str] = ()
) -> str:
    """Each failed attempt, peak memory by phase, CUDA's memory summary, ranked fixes.

    Returns where the report went, for the error message.
    """
    lines = ["brickwork out-of-memory report", "", "attempts that ran out of memory:"]
    for row in failures:
        peak = "n/a" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.2f} MiB"
        lines.append(
            f"  {row['where']} step {row['step']} micro-step {row['micro_step']}: "
            f"batch {row['size']}, failed in {row['phase']}, peak since the last error {peak}"
        )
    lines += ["", "peak memory by phase, over the attempts after the first error:", *phases]
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
