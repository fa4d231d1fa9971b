"""Stop cleanly on a signal: finish the step, save a checkpoint, exit with a known code.

Job schedulers (SLURM, Kubernetes, spot instances) send SIGTERM before they kill a
job; SLURM can send SIGUSR1 ahead of a time limit. The handler only sets a flag:
the loop checks it after each optimizer step, so a checkpoint is never written
from inside a signal handler or halfway through a step. A second Ctrl-C aborts at
once, for the impatient.

The process then exits with `EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again later"),
which a job script can use to requeue: `brickwork train --resume auto ...`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brickwork.state import TrainState

EXIT_PREEMPTED = 75


class StopOnSignal:
    """Callback that turns SIGTERM/SIGINT (and any extra signal) into a clean stop."""

    def __init__(self, signals: Sequence[str] = ("SIGTERM", "SIGINT")) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def on_fit_start(self, state: TrainState) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only delivers signals to the main thread
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.received = signal.Signals(signum)

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if self.received is not None:
            state.request_stop(f"signal {self.received.name}")

    def on_fit_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
