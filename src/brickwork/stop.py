"""Why a run ends: a `Stop` value, the signals that request one, and the agreement across ranks.

A stop is a kind plus a human-readable detail. Everything that follows from it
(the run's status in `summary.json`, whether a final checkpoint is written, the
CLI's exit code) is read from the kind, never from the wording of the detail:

    state.request_stop(StopKind.EARLY_STOPPED, "val/loss did not improve for 5 validations")

Job schedulers (SLURM, Kubernetes, spot instances) send SIGTERM before they kill a
job; SLURM can send SIGUSR1 ahead of a time limit. `SignalStop` only records the
signal: the loop turns it into a `PREEMPTED` stop after the current optimizer step,
so a checkpoint is never written from inside a signal handler or halfway through a
step. A second Ctrl-C aborts at once. The process then exits with `EXIT_PREEMPTED`
(75, EX_TEMPFAIL: "try again later"), which a job script can use to requeue with
`brickwork train --resume auto ...`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from types import FrameType
from typing import Any

from brickwork.distributed import gather_objects, is_distributed, max_across_ranks

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_PREEMPTED = 75


class StopKind(StrEnum):
    """Why a run ended. Its value is what `summary.json` records under `stop.kind`."""

    COMPLETED = "completed"  # trainer.max_epochs reached
    MAX_STEPS = "max_steps"  # trainer.max_steps reached
    EARLY_STOPPED = "early_stopped"  # the monitored metric stopped improving
    PREEMPTED = "preempted"  # a signal (SIGTERM, SIGINT, SIGUSR1): resume it later
    PRUNED = "pruned"  # a hyperparameter search judged the trial hopeless
    USER = "user"  # a callback called `state.request_stop`
    FAILED = "failed"  # an exception ended the run

    @property
    def status(self) -> str:
        """The run's status: `completed` for both planned ends, `stopped` for a user stop."""
        if self in (StopKind.COMPLETED, StopKind.MAX_STEPS):
            return "completed"
        return "stopped" if self is StopKind.USER else self.value

    @property
    def finished(self) -> bool:
        """Whether the run reached an end it chose (`--resume auto` starts a new run after it)."""
        return self not in (StopKind.PREEMPTED, StopKind.FAILED)

    @property
    def exit_code(self) -> int:
        if self is StopKind.PREEMPTED:
            return EXIT_PREEMPTED
        return EXIT_FAILED if self is StopKind.FAILED else EXIT_DONE


# Statuses after which a run is done, as `summary.json` writes them.
FINISHED_STATUSES = frozenset(kind.status for kind in StopKind if kind.finished)


@dataclass(frozen=True)
class Stop:
    """A requested or final stop: what kind, and a sentence for people."""

    kind: StopKind
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "detail": self.detail}


def agree_stop(stop: Stop | None) -> Stop | None:
    """Under DDP, every rank ends up with the stop the first stopping rank asked for.

    A collective: one all_reduce of one integer (on CPU through the gloo control group,
    so it never waits for the GPU), and an all_gather of the stops only when some rank
    asked for one. A no-op in one process.
    """
    if not is_distributed():
        return stop
    if not max_across_ranks(int(stop is not None)):
        return None
    requested = [s for s in gather_objects(stop) if s is not None]
    return stop or requested[0]


class SignalStop:
    """Records SIGTERM/SIGINT (and any extra signal) while installed; restores handlers after.

    Example:
        >>> signals = SignalStop(["SIGTERM", "SIGINT"])
        >>> with signals.installed():
        ...     ...  # the loop polls `signals.received` after each step
    """

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGINT")) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: signal.Signals | None = None

    @contextmanager
    def installed(self) -> Iterator[SignalStop]:
        """Handle the signals for the body; the previous handlers come back whatever raises."""
        if threading.current_thread() is not threading.main_thread():
            yield self  # Python only delivers signals to the main thread
            return
        previous: dict[signal.Signals, Any] = {}
        try:
            for sig in self.signals:
                previous[sig] = signal.signal(sig, self._handle)
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> Stop | None:
        """A `PREEMPTED` stop once a signal arrived, else None."""
        if self.received is None:
            return None
        return Stop(StopKind.PREEMPTED, f"signal {self.received.name}")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.received = signal.Signals(signum)
