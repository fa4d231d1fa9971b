"""Resume equality: a run stopped at any step and resumed ends bit for bit where an
uninterrupted run ends (weights, optimizer state, every logged number)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from brickwork.checkpoint import list_checkpoints
from brickwork.loop import fit
from tests.resume import StopAtStep, assert_same_state, final_state

# 1,257 training digits in batches of 64: 20 batches an epoch; with 3 per step that is
# 7 steps an epoch, the last one with only 2 micro-batches.
ACCUMULATE = [
    "trainer.accumulate_grad_batches=3",
    "trainer.log_every_n_steps=2",
    "checkpoint.keep_k=3",
]


def _final(run_dir: Path) -> tuple[dict[str, Any], str]:
    return final_state(run_dir), (run_dir / "metrics.jsonl").read_text()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import FAST

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    fit(overrides=[*FAST, *ACCUMULATE], run_dir=run_dir)
    return run_dir


@pytest.mark.parametrize(
    "stop_step",
    [3, 7, 10],
    ids=["mid-epoch-0", "end-of-epoch-0-short-step", "mid-epoch-1"],
)
def test_resume_matches_uninterrupted_run(
    uninterrupted: Path, tmp_path: Path, fast_overrides: list[str], stop_step: int
) -> None:
    run_dir = tmp_path / "run"
    first = fit(
        overrides=[*fast_overrides, *ACCUMULATE], run_dir=run_dir, callbacks=[StopAtStep(stop_step)]
    )
    assert first["status"] == "preempted" and first["num_steps"] == stop_step
    second = fit(resume=run_dir)
    assert second["status"] == "completed"
    resumed_state, resumed_metrics = _final(run_dir)
    expected_state, expected_metrics = _final(uninterrupted)
    assert_same_state(expected_state, resumed_state)
    assert resumed_metrics == expected_metrics  # every loss and lr, no duplicated or lost row


def test_step_checkpoints_resume_exactly_mid_accumulation(
    uninterrupted: Path, tmp_path: Path, fast_overrides: list[str]
) -> None:
    """Resume from each step-level checkpoint of a finished run (a crash right after it)."""
    run_dir = tmp_path / "run"
    fit(
        overrides=[
            *fast_overrides,
            *ACCUMULATE,
            "checkpoint.every_n_steps=4",
            "checkpoint.keep_k=9",
        ],
        run_dir=run_dir,
    )
    steps = [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir / "checkpoints")]
    assert steps == [4, 7, 8, 12, 14]  # step 7 and 14 end the epochs (epoch-end saves)
    reference = load_file(uninterrupted / "checkpoints" / "last" / "model.safetensors")
    resumed = load_file(run_dir / "checkpoints" / "step-00000014" / "model.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    fit(resume=run_dir / "checkpoints" / "step-00000004")
    resumed_state, resumed_metrics = _final(run_dir)
    expected_state, expected_metrics = _final(uninterrupted)
    assert_same_state(expected_state, resumed_state)
    assert resumed_metrics == expected_metrics
