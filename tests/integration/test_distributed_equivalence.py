"""N processes give the 1-process result on a dataset size that divides by nothing.

161 training samples (5 x 32 + 1; odd, not a multiple of 3): the epoch's last global
batch holds one sample, so in 2 and 3 processes some ranks hold none in the last step
and must still join DDP's all-reduce. One `torchrun` launch per process count runs
every case in one process group (`fit` leaves a caller's group alone), so the test
pays for starting processes twice, not once per case.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brickwork.loop import fit

pytestmark = pytest.mark.slow

BASE = [
    "data.val_fraction=0.1",
    "data.test_fraction=0.81",  # 161 train, 180 val samples
    "data.global_batch_size=32",
    "model={name: mlp, hidden_sizes: [32], dropout: 0}",
    "optimizer.name=sgd",
    "optimizer.lr=0.05",
    "scheduler=null",
    "early_stopping=null",
    "trainer.max_epochs=3",
    "trainer.test_after_fit=false",
    "trainer.log_every_n_steps=4",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
]
# The cap on each rank's micro-batch that makes 32 two micro-steps of 16 (over all ranks).
ACCUMULATE_CAP = {1: 16, 2: 8, 3: 6}
# Stops inside the second epoch (6 steps each); another process count finishes it.
HALF = ["trainer.max_steps=8"]
REST = ["trainer.max_steps=null"]

WORKER = """
import sys
from pathlib import Path

import torch.distributed as dist

from brickwork.loop import fit

base, root, resume_from = sys.argv[1].split("\\x1f"), Path(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo")
n = dist.get_world_size()
cap = {caps}[n]
fit(None, overrides=[*base, "data.batch_size=32"], run_dir=root / f"plain-{{n}}")
fit(None, overrides=[*base, f"data.batch_size={{cap}}"], run_dir=root / f"accumulate-{{n}}")
fit(None, overrides=[*base, "data.batch_size=32", *{half}], run_dir=root / f"half-{{n}}")
if resume_from != "-":
    fit(None, overrides=[*base, "data.batch_size=32", *{rest}], resume=root / resume_from)
dist.destroy_process_group()
"""


def launch(root: Path, num_processes: int, resume_from: str = "-") -> None:
    script = root / "worker.py"
    script.write_text(WORKER.format(caps=ACCUMULATE_CAP, half=HALF, rest=REST))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={num_processes}", str(script)]
    command += ["\x1f".join(BASE), str(root), resume_from]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def logged(run: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "train/loss" in row or "val/loss" in row]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("equivalence")
    fit(None, overrides=[*BASE, "data.batch_size=32"], run_dir=root / "plain-1")
    cap = ACCUMULATE_CAP[1]
    fit(None, overrides=[*BASE, f"data.batch_size={cap}"], run_dir=root / "accumulate-1")
    launch(root, 3)
    launch(root, 2, resume_from="half-3")  # 3 processes stopped it, 2 finish it
    return root


def assert_same_run(actual: Path, expected: Path, stopped_at: int | None = None) -> None:
    """Weights within 1e-6 (float32 sums in another order), the same logged losses.

    A run stopped at `stopped_at` by max_steps logged a validation row there besides.
    """
    got, want = weights(actual), weights(expected)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
    rows, expected_rows = logged(actual), logged(expected)
    rows = [r for r in rows if not (r["step"] == stopped_at and "val/loss" in r)]
    assert [(r["step"], sorted(r)) for r in rows] == [(r["step"], sorted(r)) for r in expected_rows]
    for row, want_row in zip(rows, expected_rows, strict=True):
        for key in ("train/loss", "train/loss_epoch", "val/loss", "val/acc"):
            if key in want_row:
                assert row[key] == pytest.approx(want_row[key], rel=1e-5, abs=1e-7), (row, key)
    assert summary(actual)["num_steps"] == summary(expected)["num_steps"] == 18


@pytest.mark.parametrize("num_processes", [2, 3])
@pytest.mark.parametrize("case", ["plain", "accumulate"])
def test_n_processes_match_one_process_on_a_size_that_divides_by_nothing(
    runs: Path, case: str, num_processes: int
) -> None:
    assert_same_run(runs / f"{case}-{num_processes}", runs / f"{case}-1")


def test_a_run_stopped_by_three_processes_and_finished_by_two_matches_one_process(
    runs: Path,
) -> None:
    assert summary(runs / "half-3")["world_size"] == 2  # the resumed run's summary
    assert_same_run(runs / "half-3", runs / "plain-1", stopped_at=8)
