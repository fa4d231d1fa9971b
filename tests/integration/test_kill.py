"""Prove it: SIGKILL at random moments (some mid-checkpoint-write) and SIGTERM/SIGUSR1,
resume each time, and end with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brickwork.checkpoint import list_checkpoints, resolve_checkpoint
from brickwork.stop import EXIT_PREEMPTED
from tests.conftest import FAST, run_cli
from tests.resume import assert_same_state, final_state

pytestmark = pytest.mark.slow

# 100 steps, a checkpoint after every one: many moments fall inside a write.
PLAIN_RUN = [*FAST, "trainer.max_epochs=5", "checkpoint.keep_k=2"]
KILL_RUN = [*PLAIN_RUN, "checkpoint.every_n_steps=1"]
NUM_KILLS = 10


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "brickwork", "train", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _last_step(run_dir: Path) -> int:
    steps = list_checkpoints(run_dir / "checkpoints")
    return int(steps[-1].name.split("-")[1]) if steps else -1


def _wait_for_progress(process: subprocess.Popen[str], run_dir: Path, after: int) -> bool:
    """Wait until a checkpoint newer than `after` exists; False if the run ended first."""
    while process.poll() is None:
        if _last_step(run_dir) > after:
            return True
        time.sleep(0.01)
    return False


def _assert_same_final_state(run_dir: Path, reference: Path) -> None:
    assert_same_state(final_state(reference), final_state(run_dir))
    assert (run_dir / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    # A fresh process like the killed ones: nothing an earlier test left in this process
    # (thread counts, backend flags) can tell the runs apart. Checkpointing every step
    # must not change the math either.
    result = run_cli(["train", "--run-dir", str(run_dir), *PLAIN_RUN])
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_sigkill_at_random_moments_resumes_to_identical_weights(
    reference: Path, tmp_path: Path
) -> None:
    rng = random.Random(4)
    run_dir = tmp_path / "run"
    args = ["--run-dir", str(run_dir), *KILL_RUN]
    kills = during_write = 0
    while kills < NUM_KILLS:
        # Kill 1-4 steps after this attempt's first progress, at a random moment within a
        # step: whatever the machine's speed, 10 kills fit in the 100 steps.
        before = _last_step(run_dir) + rng.randint(0, 3)
        process = _start(args)
        if not _wait_for_progress(process, run_dir, before):
            pytest.fail(f"run ended after {kills} kills: {process.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        during_write += any((run_dir / "checkpoints").glob(".tmp-*"))
        resolve_checkpoint(run_dir)  # a complete checkpoint is always there to resume from
        args = ["--resume", str(run_dir)]
    finished = _start(args)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    _assert_same_final_state(run_dir, reference)
    print(f"survived {kills} SIGKILLs, {during_write} of them during a checkpoint write")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_stop_signal_saves_exits_75_and_resumes_exactly(
    reference: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    run_dir = tmp_path / "run"
    process = _start(["--run-dir", str(run_dir), *PLAIN_RUN])
    deadline = time.monotonic() + 120
    while (
        not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").stat().st_size
    ):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, stderr
    saved = _last_step(run_dir)
    assert 0 < saved < 100  # stopped mid-run, at the step it was on
    resumed = subprocess.run(
        [sys.executable, "-m", "brickwork", "train", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_final_state(run_dir, reference)
