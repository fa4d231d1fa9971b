"""Real multi-process training: torchrun, gloo on CPU, two ranks, no mocks.

Each test starts real processes (`torchrun`, or `brickwork train trainer.devices=2`,
which launches through torchrun's API). The model has no BatchNorm and no dropout,
so one process with batch 32 and two with batch 16 compute the same gradients.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brickwork.checkpoint import load_checkpoint
from brickwork.loop import fit
from brickwork.stop import EXIT_PREEMPTED
from tests.conftest import run_cli, run_cli_in_process

pytestmark = pytest.mark.slow

# Small and deterministic: an MLP without dropout, constant learning rate, no extra output.
BASE = [
    "model={name: mlp, hidden_sizes: [32], dropout: 0}",
    "scheduler=null",
    "early_stopping=null",
    "trainer.test_after_fit=false",
    "trainer.log_every_n_steps=5",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
]


def torchrun(args: list[str], num_processes: int = 2) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc-per-node=N -m brickwork ARGS`, as a user types it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={num_processes}", "-m", "brickwork", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Equal to float tolerance: the ranks sum the gradient in a different order."""
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def check(result: subprocess.CompletedProcess[str], code: int = 0) -> None:
    assert result.returncode == code, result.stderr[-3000:]


# 12 steps stay inside the first epoch: no padded last batch to tell the runs apart.
STEPS = [*BASE, "trainer.max_steps=12", "trainer.max_epochs=null"]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 12 steps by one process of batch 32 and by two processes of batch 16."""
    root = tmp_path_factory.mktemp("ddp")
    fit(None, overrides=[*STEPS, "data.batch_size=32"], run_dir=root / "one")  # in-process
    check(torchrun(["train", *STEPS, "data.batch_size=16", "--run-dir", str(root / "two")]))
    return root / "one", root / "two"


def test_two_processes_of_16_match_one_process_of_32(one_and_two: tuple[Path, Path]) -> None:
    one, two = one_and_two
    assert_same_weights(weights(two), weights(one))  # same keys: no `module.` prefix from DDP
    one_final, two_final = summary(one)["final"], summary(two)["final"]
    assert two_final["val/acc"] == one_final["val/acc"]  # every val sample counted once
    assert two_final["val/loss"] == pytest.approx(one_final["val/loss"], rel=1e-5)
    log = (two / "train.log").read_text()
    assert "global batch 32 = 2 process(es) x 16 per process" in log


def test_checkpoints_move_between_one_and_two_processes(
    one_and_two: tuple[Path, Path], tmp_path: Path
) -> None:
    one, two = (shutil.copytree(run, tmp_path / run.name, symlinks=True) for run in one_and_two)
    more = ["trainer.max_steps=24"]
    check(torchrun(["train", *more, "data.batch_size=16", "--resume", str(one)]))
    fit(None, overrides=[*more, "data.batch_size=32"], resume=two)
    assert summary(one)["num_steps"] == summary(two)["num_steps"] == 24
    assert_same_weights(weights(one), weights(two))


def test_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    # Logging every 3 of 10 steps per epoch: the checkpoint holds a part-filled interval.
    common = [*BASE, "data.batch_size=64", "trainer.devices=2", "trainer.log_every_n_steps=3"]
    check(run_cli(["train", *common, "trainer.max_epochs=4", "--run-dir", "straight"]))
    check(run_cli(["train", *common, "trainer.max_epochs=2", "--run-dir", "resumed"]))
    check(run_cli(["train", "trainer.max_epochs=4", "--resume", "resumed"]))

    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0)
    assert summary(tmp_path / "resumed")["final"] == summary(tmp_path / "straight")["final"]
    logged = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("straight", "resumed")]
    assert logged[0] == logged[1]  # the train loss over both ranks continues exactly
    state = load_checkpoint((tmp_path / "resumed" / "checkpoints" / "last").resolve())
    assert len(state["rng_per_rank"]) == 2  # both ranks' generators were saved


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    args = [*BASE, "data.batch_size=8", "trainer.max_epochs=100", "trainer.devices=2"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "brickwork", "train", *args, "--run-dir", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, launcher)
        rank_one = _child_with_rank(launcher.pid, rank=1)
        os.kill(rank_one, signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == EXIT_PREEMPTED, stderr[-3000:]
    stopped = {
        line.split("rank ")[1].split(" ")[0]: int(line.split("at step ")[1].split(" ")[0])
        for line in stderr.splitlines()
        if "stopped at step" in line
    }
    assert stopped.keys() == {"0", "1"}, stderr[-3000:]
    step = stopped["0"]
    assert stopped["1"] == step
    run = summary(tmp_path / "run")
    assert (run["status"], run["num_steps"]) == ("preempted", step)
    assert run["stop"] == {"kind": "preempted", "detail": "signal SIGTERM"}  # rank 1's stop
    assert (tmp_path / "run" / "checkpoints" / "last").resolve().name == f"step-{step:08d}"


def _wait_for(condition, process: subprocess.Popen[str], timeout_s: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited early: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for training to start")
        time.sleep(0.1)


def _child_with_rank(parent: int, rank: int) -> int:
    """The pid of the worker process torchrun started with `RANK=rank`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(status.split("PPid:")[1].split()[0])
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no child of {parent} with RANK={rank}")


STALLING_MODEL = '''
import os, time
from brickwork.models.basic import MLP
from brickwork.registry import register


@register("model", "stalling_mlp")
class StallingMLP(MLP):
    """An MLP whose rank 1 hangs for 5 s in its third training forward."""

    calls = 0

    def forward(self, x):
        StallingMLP.calls += self.training
        if os.environ.get("RANK") == "1" and StallingMLP.calls == 3:
            time.sleep(5)
        return super().forward(x)
'''


def test_a_stuck_rank_becomes_an_error_naming_the_rank(tmp_path: Path) -> None:
    (tmp_path / "stall.py").write_text(STALLING_MODEL)
    args = [*BASE, f"imports=[{tmp_path / 'stall.py'}]"]
    args += ["model={name: stalling_mlp, hidden_sizes: [32], dropout: 0}"]
    args += ["trainer.devices=2", "trainer.dist_timeout_s=2", "trainer.max_epochs=1"]
    result = run_cli(["train", *args, "--run-dir", "run"], timeout_s=90)
    assert result.returncode == 1
    assert "rank 0 of 2: a collective waited more than trainer.dist_timeout_s=2s" in result.stderr
    run = summary(tmp_path / "run")
    assert run["status"] == "failed"
    assert run["wall_s"] < 4.5  # rank 0 gave up after the timeout, not after rank 1's 5 s


RANK0_SNAPSHOT = """
from brickwork.distributed import is_main_process
from brickwork.registry import register


@register("callback", "rank0_snapshot")
class Rank0Snapshot:
    def on_step_end(self, state, logs):
        if state.step == 2 and is_main_process():
            state.state_dict()  # local: must not wait for the other rank
"""


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One two-process run that early-stops and snapshots its state on rank 0 alone at
    step 2 (two tests below read it): its folder and its console output."""
    root = tmp_path_factory.mktemp("early")
    (root / "snapshot.py").write_text(RANK0_SNAPSHOT)
    args = [*BASE, "data.batch_size=64", "trainer.devices=2", "trainer.max_epochs=6"]
    args += ["early_stopping={monitor: val/loss, patience: 1, min_delta: 100}"]
    args += [f"imports=[{root / 'snapshot.py'}]", "callbacks=[rank0_snapshot]"]
    args += ["trainer.dist_timeout_s=5"]
    result = run_cli(["train", *args, "--run-dir", str(root / "run")], timeout_s=90)
    check(result)
    return root / "run", result.stdout


def test_early_stopping_on_rank_zero_stops_every_rank(early_stopped: tuple[Path, str]) -> None:
    run_dir, stdout = early_stopped
    run = summary(run_dir)
    assert (run["status"], run["num_epochs"]) == ("early_stopped", 2)
    assert "global batch 128 = 2 process(es)" in stdout


def test_state_dict_on_one_rank_alone_runs_no_collective(early_stopped: tuple[Path, str]) -> None:
    """Before the core reshape this gathered RNG states and hung rank 0 until the timeout
    (5 s here), and the run failed; the snapshot at step 2 is in the early-stopped run."""
    run = summary(early_stopped[0])
    assert run["status"] == "early_stopped" and run["num_steps"] > 2


def test_trainer_devices_may_change_on_resume_when_the_global_batch_stays(
    one_and_two: tuple[Path, Path], tmp_path: Path
) -> None:
    """2 -> 1 and 1 -> 2 processes through `trainer.devices`, as docs/distributed.md says
    (the test above moves the same runs with torchrun and the Python API)."""
    for run in one_and_two:
        shutil.copytree(run, tmp_path / run.name, symlinks=True)
    more = ["trainer.max_steps=24"]
    check(run_cli(["train", *more, "trainer.devices=1", "data.batch_size=32", "--resume", "two"]))
    check(run_cli(["train", *more, "trainer.devices=2", "data.batch_size=16", "--resume", "one"]))
    one, two = tmp_path / "one", tmp_path / "two"
    assert summary(one)["num_steps"] == summary(two)["num_steps"] == 24
    assert (summary(one)["world_size"], summary(two)["world_size"]) == (2, 1)
    assert_same_weights(weights(one), weights(two))
    # A different global batch is still a change of the math.
    refused = run_cli_in_process(
        ["train", "trainer.max_steps=30", "trainer.devices=1", "--resume", "one"]
    )
    assert refused.returncode == 2
    assert "samples per step (all processes) (32 -> 16)" in refused.stderr


def test_resume_force_and_the_chosen_checkpoint_reach_the_launched_ranks() -> None:
    from brickwork.cli import build_parser
    from brickwork.cli.train import _argv

    typed = ["train", "trainer.devices=2", "--resume", "r", "--resume-force"]
    args = build_parser().parse_args(typed)
    assert _argv(args) == typed[:]
    chosen = Path("r/checkpoints/step-00000010")  # decided once, by the launching process
    assert _argv(args, chosen)[-3:] == ["--resume", str(chosen), "--resume-force"]
    auto = build_parser().parse_args(["train", "--resume", "auto"])
    assert _argv(auto) == ["train"]  # nothing unfinished: every rank starts the same new run
