"""A NaN loss stops the run naming the step and the module, or is skipped when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from brickwork.loop import fit
from brickwork.nonfinite import NonFiniteError


class PoisonAfterStep:
    """From `step` on, make `features.0`'s output NaN for the next `count` forwards."""

    def __init__(self, step: int, count: int) -> None:
        self.step, self.remaining = step, count

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if state.step == self.step:
            state.model.features[0].register_forward_hook(self._poison)

    def _poison(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> Any:
        if self.remaining > 0:
            self.remaining -= 1
            return output * float("nan")
        return None


def test_nonfinite_loss_stops_naming_step_module_and_samples(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError) as error:
        fit(
            overrides=[*fast_overrides, "checkpoint.every_n_steps=2"],
            run_dir=run_dir,
            callbacks=[PoisonAfterStep(3, 99)],
        )
    message = str(error.value)
    assert "step 4" in message and "features.0 (Conv2d)" in message
    # Read before the step-4 checkpoint would be written; step 2's weights are put back.
    assert "weights restored from checkpoint step-00000002" in message
    assert "trainer.on_nonfinite=skip" in message
    rows = [json.loads(line) for line in (run_dir / "nonfinite.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 4 and len(rows[0]["sample_indices"]) == 64
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    weights = load_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())  # NaN never saved


def test_skip_mode_skips_counts_and_stops_past_the_limit(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    skipping = [*fast_overrides, "trainer.on_nonfinite=skip", "trainer.max_nonfinite_steps=2"]
    summary = fit(overrides=skipping, run_dir=tmp_path / "a", callbacks=[PoisonAfterStep(3, 2)])
    assert summary["status"] == "completed" and summary["num_steps"] == 40 - 2
    assert summary["final"]["val/loss"] == pytest.approx(summary["final"]["val/loss"])  # not NaN
    weights = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())  # BatchNorm stats too
    rows = (tmp_path / "a" / "nonfinite.jsonl").read_text().splitlines()
    assert [json.loads(r)["skipped"] for r in rows] == [True, True]
    with pytest.raises(NonFiniteError, match="max_nonfinite_steps=2"):
        fit(overrides=skipping, run_dir=tmp_path / "b", callbacks=[PoisonAfterStep(3, 3)])


def test_a_bad_step_found_at_a_logging_step_without_an_earlier_checkpoint_says_so(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    """The flag is read at step 5 (logging), not at step 2 when it happened."""
    with pytest.raises(NonFiniteError) as error:
        fit(overrides=fast_overrides, run_dir=tmp_path / "run", callbacks=[PoisonAfterStep(1, 99)])
    message = str(error.value)
    assert "non-finite loss at step 2 (epoch 1)" in message
    assert "no checkpoint was taken before it, so the weights stay non-finite" in message
    rows = [json.loads(r) for r in (tmp_path / "run" / "nonfinite.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2] and len(rows[0]["sample_indices"]) == 64
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()


def test_a_loss_of_shape_one_is_found_and_named_like_a_scalar_one(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    """A `compute_loss` may return its loss as shape (1,), which backward accepts."""
    from brickwork.components import SupervisedStep

    default = SupervisedStep(torch.nn.CrossEntropyLoss())

    def shaped_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        output = default(model, batch)
        return {**output, "loss": output["loss"].reshape(1)}

    with pytest.raises(NonFiniteError) as error:
        fit(
            overrides=fast_overrides,
            run_dir=tmp_path / "run",
            callbacks=[PoisonAfterStep(1, 99)],
            compute_loss=shaped_loss,
        )
    assert "non-finite loss at step 2 (epoch 1)" in str(error.value)
