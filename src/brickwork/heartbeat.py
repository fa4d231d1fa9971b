"""The heartbeat: how `brickwork runs` tells a live run from a crashed one.

`summary.json` says `running` from the first step until the run ends; a process killed
with SIGKILL (or by the OOM killer, or a lost node) never gets to change that. So a
running run's rank 0 also rewrites `heartbeat.json` (pid, host, time, step) every
`INTERVAL_S` seconds from a daemon thread: a few hundred bytes, off the training
thread, so it costs the loop nothing. `liveness` reads it back: a run whose process is
gone (same host) or whose heartbeat is older than `STALE_AFTER_S` is `crashed`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brickwork.files import write_atomically

HEARTBEAT_FILE = "heartbeat.json"
INTERVAL_S = 30.0
STALE_AFTER_S = 3 * INTERVAL_S + 60  # three missed beats and a slow disk's worth


class Heartbeat:
    """A `Logger` that only says "still alive"; built for every run on rank 0."""

    def __init__(self, path: Path, interval_s: float = INTERVAL_S) -> None:
        self.path, self.interval_s = path, interval_s
        self.step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, step: int) -> None:
        self.step = step
        self._beat()
        self._thread = threading.Thread(target=self._run, name="brickwork-heartbeat", daemon=True)
        self._thread.start()

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int, epoch: int) -> None:
        self.step = step  # read by the thread's next beat

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, summary: Mapping[str, Any]) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def _beat(self) -> None:
        beat = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
            "step": self.step,
            "interval_s": self.interval_s,
        }
        # A full disk stops the run elsewhere; the heartbeat only goes stale.
        with contextlib.suppress(OSError):
            write_atomically(self.path, json.dumps(beat) + "\n")


def liveness(run_dir: Path, now: float | None = None) -> str:
    """`running` or `crashed` for a run whose summary says `running`.

    Crashed: the heartbeat's process is gone on this host, or the newest sign of life
    (the heartbeat, else `summary.json` or `config.yaml`) is older than `STALE_AFTER_S`.
    """
    now = time.time() if now is None else now
    try:
        beat = json.loads((run_dir / HEARTBEAT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        beat = None
    if isinstance(beat, dict):
        if beat.get("host") == socket.gethostname() and not _process_alive(beat.get("pid")):
            return "crashed"
        interval = float(beat.get("interval_s", INTERVAL_S))
        fresh = now - float(beat.get("time", 0)) <= max(STALE_AFTER_S, 3 * interval + 60)
        return "running" if fresh else "crashed"
    newest = max(
        (
            p.stat().st_mtime
            for p in (run_dir / "summary.json", run_dir / "config.yaml")
            if p.exists()
        ),
        default=0.0,
    )
    return "running" if now - newest <= STALE_AFTER_S else "crashed"


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
