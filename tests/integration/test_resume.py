"""Resume and reproducibility: the same seed gives the same run; a resumed run equals
an uninterrupted one, weights, optimizer state and logged metrics alike."""

from __future__ import annotations

import json
from pathlib import Path

from brickwork.loop import fit
from tests.conftest import FAST
from tests.resume import StopAtStep, assert_same_state, final_state


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a: Path, b: Path) -> None:
    assert_same_state(final_state(a), final_state(b))


def test_same_seed_gives_identical_losses(tmp_path: Path) -> None:
    fit(None, overrides=FAST, run_dir=tmp_path / "a")
    fit(None, overrides=FAST, run_dir=tmp_path / "b")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    fit(None, overrides=[*FAST, "seed=7"], run_dir=tmp_path / "c")
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "c")


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # Dropout draws random numbers, early stopping keeps a counter, the cosine schedule
    # a position: all must survive the resume.
    overrides = [*FAST, "trainer.max_epochs=6", "early_stopping.patience=50", "model.dropout=0.3"]
    straight = fit(None, overrides=overrides, run_dir=tmp_path / "straight")

    fit(None, overrides=overrides, run_dir=tmp_path / "resumed", callbacks=[StopAtStep(epoch=3)])
    resumed = fit(None, overrides=overrides, resume=tmp_path / "resumed")

    assert straight["num_steps"] == resumed["num_steps"] == 6 * 20
    _assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "resumed")
    assert straight["best"] == resumed["best"]


def test_three_epochs_then_resume_to_six_equals_six_straight(tmp_path: Path) -> None:
    # A step schedule does not depend on the run's length, so extending max_epochs on
    # resume continues exactly where a longer run would be.
    overrides = [*FAST, "scheduler.name=step", "scheduler.step_size=2", "early_stopping=null"]
    fit(None, overrides=[*overrides, "trainer.max_epochs=6"], run_dir=tmp_path / "straight")
    fit(None, overrides=[*overrides, "trainer.max_epochs=3"], run_dir=tmp_path / "resumed")
    fit(None, overrides=[*overrides, "trainer.max_epochs=6"], resume=tmp_path / "resumed")
    _assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "resumed")


def test_resume_from_an_epoch_boundary_continues_the_run_folder(tmp_path: Path) -> None:
    fit(None, overrides=FAST, run_dir=tmp_path / "run")
    summary = fit(None, overrides=["trainer.max_epochs=3"], resume=tmp_path / "run")
    assert summary["num_epochs"] == 3
    steps = [row["step"] for row in _metrics(tmp_path / "run")]
    assert steps == sorted(steps)  # no duplicated or reset steps


def test_loader_workers_do_not_change_the_run(tmp_path: Path) -> None:
    # The order comes from the sampler, not from worker processes: 0 and 2 workers agree.
    fit(None, overrides=FAST, run_dir=tmp_path / "main")
    fit(
        None,
        overrides=[*FAST, "data.num_workers=2", "data.persistent_workers=true"],
        run_dir=tmp_path / "workers",
    )
    assert _metrics(tmp_path / "main") == _metrics(tmp_path / "workers")
