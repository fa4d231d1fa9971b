"""The stale-heartbeat rule that tells a crashed run from a running one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from brickwork.heartbeat import HEARTBEAT_FILE, STALE_AFTER_S, Heartbeat, liveness


def _beat(run_dir: Path, **fields: object) -> None:
    beat = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "interval_s": 30}
    (run_dir / HEARTBEAT_FILE).write_text(json.dumps({**beat, **fields}))


def test_a_fresh_heartbeat_of_a_live_process_is_running(tmp_path: Path) -> None:
    _beat(tmp_path)
    assert liveness(tmp_path) == "running"


def test_a_heartbeat_of_a_process_that_is_gone_is_crashed_at_once(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _beat(tmp_path, pid=int(finished.stdout))
    assert liveness(tmp_path) == "crashed"


def test_a_heartbeat_from_another_host_is_crashed_only_once_stale(tmp_path: Path) -> None:
    _beat(tmp_path, host="elsewhere", pid=1, time=time.time() - 10)
    assert liveness(tmp_path) == "running"
    _beat(tmp_path, host="elsewhere", pid=1, time=time.time() - STALE_AFTER_S - 1)
    assert liveness(tmp_path) == "crashed"


def test_a_run_without_a_heartbeat_is_judged_by_its_summarys_age(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text('{"status": "running"}')
    assert liveness(tmp_path) == "running"
    old = time.time() - STALE_AFTER_S - 1
    os.utime(summary, (old, old))
    assert liveness(tmp_path) == "crashed"


def test_the_heartbeat_beats_from_its_thread_and_stops_on_close(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / HEARTBEAT_FILE, interval_s=0.05)
    heartbeat.start(step=7)
    first = json.loads((tmp_path / HEARTBEAT_FILE).read_text())["time"]
    heartbeat.log_metrics({}, step=9, epoch=0)
    deadline = time.monotonic() + 10
    while json.loads((tmp_path / HEARTBEAT_FILE).read_text())["step"] != 9:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    heartbeat.close({})
    last = json.loads((tmp_path / HEARTBEAT_FILE).read_text())
    assert last["time"] > first
    time.sleep(0.2)
    assert json.loads((tmp_path / HEARTBEAT_FILE).read_text()) == last  # no beat after close
