"""Optuna pruners as a study builds them: Hyperband's resource is the study's epoch budget."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from brickwork.tune.optuna_engine import build_pruner, max_epochs_of
from brickwork.tune.study import StudySettings


def _settings(space: dict[str, Any], epochs: int = 8) -> StudySettings:
    return StudySettings(
        engine="optuna",
        config=None,
        overrides=[f"trainer.max_epochs={epochs}"],
        space=space,
        metric="val/acc",
        mode="max",
        num_trials=40,
        timeout_s=None,
        sampler="tpe",
        pruner="hyperband",
    )


LR = {"optimizer.lr": {"loguniform": [1.0e-4, 1.0e-1]}}


def test_hyperband_resource_is_the_configs_epochs_or_the_searched_maximum() -> None:
    assert max_epochs_of(_settings(LR, epochs=8)) == 8
    searched = {**LR, "trainer.max_epochs": {"int": [5, 30]}}
    assert max_epochs_of(_settings(searched, epochs=8)) == 30
    assert max_epochs_of(_settings({**LR, "trainer.max_epochs": [4, 12, 6]})) == 12


@pytest.mark.parametrize("epochs", [3, 8, 20])
def test_every_hyperband_bracket_prunes_before_the_last_epoch(epochs: int) -> None:
    # Each new trial is worse than every earlier one at every epoch (as brickwork reports:
    # finished epochs, from 1), so in each bracket only its first trial may run to the end.
    # Optuna's "auto" resource saw epochs + 1 and made a bracket whose one rung no trial
    # reaches: 8 epochs let every trial of that bracket finish.
    pruner = build_pruner(_settings(LR, epochs))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for number in range(40):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(epoch - number, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, epochs - number)
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) <= pruner._n_brackets  # the first trial of each bracket at most
