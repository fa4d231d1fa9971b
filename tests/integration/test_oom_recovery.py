"""Out-of-memory recovery in real training runs, with a real `torch.OutOfMemoryError` injected.

The claims: a run that runs out of memory goes on with a halved micro-batch and ends
with exactly the weights of a run that used that micro-batch from the start; the
failed attempt leaves no trace (gradients, dropout draws); a resume keeps the smaller
micro-batch; evaluation halves its batch; under two processes an error on one rank
changes both, with no hang.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brickwork.checkpoint import load_checkpoint
from brickwork.loop import fit
from tests.conftest import FAST_MLP, run_cli_in_process
from tests.integration.test_distributed import torchrun
from tests.resume import StopAtStep

# An MLP with dropout (random draws a retry must repeat), 6 steps of 2 micro-batches of 32.
BASE = [
    *FAST_MLP,
    "model.dropout=0.3",
    "scheduler=null",
    "early_stopping=null",
    "trainer.max_epochs=null",
    "trainer.max_steps=6",
]
HALVED = ["data.batch_size=16", "trainer.accumulate_grad_batches=4"]
WHOLE = ["data.batch_size=32", "trainer.accumulate_grad_batches=2"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def assert_equal_weights(left: Path, right: Path) -> None:
    a, b = weights(left), weights(right)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def train(tmp_path: Path, name: str, overrides: list[str], inject: str, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BRICKWORK_INJECT_OOM", inject)
    fit(None, overrides=[*BASE, *overrides], run_dir=tmp_path / name)
    return tmp_path / name


def test_recovered_run_equals_a_run_with_the_halved_micro_batch_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recovered = train(tmp_path, "recovered", WHOLE, "1:0", monkeypatch)
    halved = train(tmp_path, "halved", HALVED, "", monkeypatch)
    assert_equal_weights(recovered, halved)
    assert summary(recovered)["out_of_memory"]["num_recoveries"] == 1
    assert summary(recovered)["out_of_memory"]["micro_batch_size"] == 16
    assert summary(recovered)["status"] == "completed"
    logged = [(run / "metrics.jsonl").read_text() for run in (recovered, halved)]
    assert logged[0] == logged[1]  # the logged losses too


def test_failed_attempt_leaves_no_gradient_and_no_random_draw_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At micro-step 1 the failed attempt already ran micro-step 0 (a backward, a dropout
    # mask); the retry must match a failure at micro-step 0, where nothing had run.
    late = train(tmp_path, "late", WHOLE, "4:1", monkeypatch)
    early = train(tmp_path, "early", WHOLE, "4:0", monkeypatch)
    assert_equal_weights(late, early)
    assert summary(late)["out_of_memory"]["num_recoveries"] == 1


def test_resume_after_recovery_keeps_the_smaller_micro_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRICKWORK_INJECT_OOM", "2:0")
    overrides = [*BASE, *WHOLE]
    fit(None, overrides=overrides, run_dir=tmp_path / "stopped", callbacks=[StopAtStep(4)])
    saved = load_checkpoint((tmp_path / "stopped" / "checkpoints" / "last").resolve())
    assert saved["callbacks"]["micro_batch"]["micro_batch_size"] == 16
    monkeypatch.delenv("BRICKWORK_INJECT_OOM")
    fit(None, overrides=overrides, resume=tmp_path / "stopped")
    straight = train(tmp_path, "straight", WHOLE, "2:0", monkeypatch)
    assert_equal_weights(tmp_path / "stopped", straight)
    resumed = summary(tmp_path / "stopped")["out_of_memory"]
    assert (resumed["micro_batch_size"], resumed["num_recoveries"]) == (16, 1)


def test_evaluation_out_of_memory_halves_the_evaluation_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hit = train(tmp_path, "hit", WHOLE, "eval:0", monkeypatch)
    clean = train(tmp_path, "clean", WHOLE, "", monkeypatch)
    assert summary(hit)["out_of_memory"]["eval_batch_size"] == 16  # 32 -> 16
    assert summary(hit)["final"]["val/acc"] == summary(clean)["final"]["val/acc"]
    assert summary(hit)["final"]["val/loss"] == pytest.approx(summary(clean)["final"]["val/loss"])


@pytest.mark.slow
def test_out_of_memory_at_one_sample_stops_with_a_report(tmp_path: Path) -> None:
    import os

    env_before = os.environ.get("BRICKWORK_INJECT_OOM")
    # 4 -> 2 -> 1 -> no smaller; the later errors come after measured micro-steps.
    os.environ["BRICKWORK_INJECT_OOM"] = "1:0;1:1;1:-1:backward"
    try:
        result = run_cli_in_process(["train", *BASE, "data.batch_size=4", "--run-dir", "run"])
    finally:
        os.environ.pop("BRICKWORK_INJECT_OOM")
        if env_before is not None:
            os.environ["BRICKWORK_INJECT_OOM"] = env_before
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "Traceback" not in result.stderr
    assert "micro-batch of 1 sample" in error_lines[0]
    assert "trainer.precision=bf16" in error_lines[0]
    report = (tmp_path / "run" / "oom_report.txt").read_text()
    assert "failed in forward" in report and "failed in backward" in report
    assert "expandable_segments" in report and "memory_summary" in report
    # Peak memory by phase, with figures from the CPU's tensor profile.
    by_phase = report.split("peak memory by phase")[1].split("fixes")[0]
    for phase in ("forward:", "loss and backward:", "optimizer step:", "parameters:"):
        line = next(line for line in by_phase.splitlines() if line.strip().startswith(phase))
        assert float(line.split(":")[1].split()[0]) > 0, line
    assert summary(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_out_of_memory_on_one_rank_of_two_in_the_last_micro_step_is_recovered_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 1 alone runs out at step 1: in the forward of the last micro-step (the one
    # whose backward all-reduces gradients), then inside that backward, after the first
    # of DDP's two gradient buckets was already all-reduced. Both ranks halve together
    # (16 -> 8 -> 4), nobody hangs, and the recovered size is in the checkpoint.
    monkeypatch.setenv("BRICKWORK_INJECT_OOM", "1:-1,1;1:-1:backward,1")
    two, one = tmp_path / "two", tmp_path / "one"
    result = torchrun(["train", *DDP_CASE, "data.batch_size=16", "--run-dir", str(two)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("out of memory at step 1") == 4  # both ranks, twice
    assert result.stderr.count("(on another rank)") == 2  # rank 0 followed rank 1
    assert summary(two)["out_of_memory"]["micro_batch_size"] == 4
    saved = load_checkpoint((two / "checkpoints" / "last").resolve())
    assert saved["callbacks"]["micro_batch"]["micro_batch_size"] == 4
    monkeypatch.delenv("BRICKWORK_INJECT_OOM")
    # The recovered global micro-batch (2 ranks x 4) and step (64 samples) from the start.
    fit(
        None,
        overrides=[*DDP_CASE, "data.batch_size=8", "trainer.accumulate_grad_batches=8"],
        run_dir=one,
    )
    for name, tensor in weights(one).items():  # equal up to the ranks' summation order
        torch.testing.assert_close(weights(two)[name], tensor, rtol=1e-5, atol=1e-6)


# Layers sized so DDP makes two gradient buckets (the head and the last layer fill DDP's
# 1 MB first bucket); SGD, whose update is proportional to the gradient, so summation
# order stays at float noise (Adam turns noise on near-zero gradients into +-lr steps).
DDP_CASE = [
    *BASE,
    "model.hidden_sizes=[64,1024,512]",
    "model.dropout=0",
    "optimizer.name=sgd",
    "trainer.accumulate_grad_batches=2",
]


# Twenty out-of-memory errors, all on rank 1 of 2: four in training, one after another
# at step 1 (last micro-step forward, its backward after a bucket was all-reduced, an
# accumulation micro-step's backward, a middle micro-step): 16 -> 8 -> 4 -> 2 -> 1; then
# eight in validation (its batch of 135 per rank halved down to 1) and eight in the
# test pass (the same): forwards 0-7, and 143-150 after validation's 8 + 135 forwards.
TWENTY = "1:-1,1;1:-1:backward,1;1:0:backward,1;1:3,1;eval:0-7,1;eval:143-150,1"


@pytest.mark.slow
def test_twenty_out_of_memory_errors_on_one_rank_of_two_leave_the_math_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRICKWORK_INJECT_OOM", TWENTY)
    two, one = tmp_path / "two", tmp_path / "one"
    case = [*BASE, *SMALL_SGD, "trainer.max_steps=4", "trainer.test_after_fit=true"]
    command = ["train", *case, "data.batch_size=16", "--run-dir", str(two)]
    result = torchrun(command)  # a hang fails here, after torchrun's timeout
    assert result.returncode == 0, result.stderr[-3000:]
    training = result.stderr.count("out of memory at step 1")
    evaluation = result.stderr.count("out of memory in evaluation")
    assert (training, evaluation) == (8, 16)  # 4 on each rank; 16 on rank 1 alone
    recovered = summary(two)
    assert recovered["out_of_memory"]["micro_batch_size"] == 1
    # Evaluation halves on the rank that ran out (no collective): rank 0 never had to.
    assert recovered["out_of_memory"]["eval_batch_size"] is None
    saved = load_checkpoint((two / "checkpoints" / "last").resolve())
    assert saved["callbacks"]["micro_batch"]["micro_batch_size"] == 1
    monkeypatch.delenv("BRICKWORK_INJECT_OOM")
    # The recovered global micro-batch (2 ranks x 1) from the start, in one process.
    fit(
        None,
        overrides=[*case, "data.batch_size=2", "trainer.accumulate_grad_batches=32"],
        run_dir=one,
    )
    reference = summary(one)
    for key in ("train/loss_epoch", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert recovered["final"][key] == pytest.approx(reference["final"][key], rel=1e-5), key
    for name, tensor in weights(one).items():
        torch.testing.assert_close(weights(two)[name], tensor, rtol=1e-5, atol=1e-6)


SMALL_SGD = [
    "model.dropout=0",
    "optimizer.name=sgd",
    "data.eval_batch_size=256",
    "trainer.accumulate_grad_batches=2",
]
