"""A study killed while it held Optuna's journal lock resumes: the lock does not hang it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brickwork.tune.optuna_engine import _journal_backend

optuna = pytest.importorskip("optuna")


@pytest.mark.timeout(60)  # the bug this guards against waited forever
def test_a_dead_processs_relative_lock_link_does_not_block_the_resumed_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s").mkdir()
    journal = Path("s/optuna.journal")
    journal.touch()
    # What a process killed inside the lock left when the study folder was given relative:
    # a link relative to the wrong folder, which Optuna can never see grow stale.
    os.symlink("s/optuna.journal", "s/optuna.journal.lock")
    storage = optuna.storages.JournalStorage(_journal_backend(journal))
    study = optuna.create_study(study_name="s", storage=storage)  # takes and frees the lock
    study.enqueue_trial({"x": 1.0})
    assert len(study.trials) == 1
    lock = Path("s/optuna.journal.lock")
    assert not lock.is_symlink()  # released after each write, not left behind
