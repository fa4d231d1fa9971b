"""The study folder: what a search keeps on disk, whichever engine ran it.

    studies/<name>/
        study.json       the settings: engine, metric, mode, budget, config and overrides
        space.yaml       the search space as validated
        optuna.journal   Optuna's journal storage (engine optuna)
        ray/             Ray's temporary and result folders (engine ray)
        trials/trial-0007/   one ordinary brickwork run folder per trial
        trials.csv       every trial, best first: number, state, metric, parameters, run folder
        best.yaml        the base config with the best trial's overrides, trainable as it is
        plots/           history.png, importance.png, parallel.png

`study.json` is written once, when the study starts; `--resume` reads it back and
refuses a different config, space or metric, so a resumed study cannot mix two searches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from brickwork.config import Config, load_config
from brickwork.errors import ConfigError
from brickwork.files import write_atomically
from brickwork.tune.space import SearchSpace, parse_space

Engine = Literal["optuna", "ray"]
TrialState = Literal["complete", "pruned", "failed", "running", "waiting"]
DEFAULT_NUM_TRIALS = 20


@dataclass
class StudySettings:
    """Everything that decides what a study searches; saved as `study.json`."""

    engine: Engine
    config: str | None  # absolute path of the base config, or None for the built-in default
    overrides: list[str]
    space: dict[str, Any]
    metric: str
    mode: Literal["min", "max"]
    num_trials: int
    timeout_s: float | None
    sampler: str
    pruner: str
    workers: int = 1
    seed: int = 42
    ray: dict[str, Any] = field(default_factory=dict)  # address, resources per trial

    @property
    def search_space(self) -> SearchSpace:
        return parse_space(self.space, "space.yaml")

    def trial_config(self, param_overrides: list[str]) -> Config:
        """The config one trial trains: the base config, the study's overrides, the point."""
        config = Path(self.config) if self.config else None
        return load_config(config, [*self.overrides, *param_overrides, "tune=null"])

    def same_search(self, other: StudySettings) -> list[str]:
        """The settings that differ from `other` in what is searched (not in the budget)."""
        keys = ("engine", "config", "overrides", "space", "metric", "mode", "sampler", "pruner")
        return [k for k in keys if getattr(self, k) != getattr(other, k)]


@dataclass
class TrialRecord:
    """One trial as the table, the live line and best.yaml see it, from either engine."""

    number: int
    state: TrialState
    params: dict[str, Any]  # dotted key -> config value
    value: float | None = None
    duration_s: float | None = None
    run_dir: str | None = None
    reason: str = ""  # one line: why it failed or was pruned
    num_epochs: int | None = None


class StudyFolder:
    """Paths of one study folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def settings_file(self) -> Path:
        return self.directory / "study.json"

    @property
    def trials_dir(self) -> Path:
        return self.directory / "trials"

    @property
    def journal(self) -> Path:
        return self.directory / "optuna.journal"

    def trial_dir(self, number: int) -> Path:
        return self.trials_dir / f"trial-{number:04d}"

    def exists(self) -> bool:
        return self.settings_file.is_file()

    def create(self, settings: StudySettings) -> None:
        """Start a new study here; an existing, non-empty folder is never written into."""
        if self.directory.exists() and any(self.directory.iterdir()):
            hint = (
                "continue it with --resume"
                if self.exists()
                else "it was not made by brickwork tune"
            )
            raise ConfigError(
                f"--study-dir {self.directory}: folder exists and is not empty ({hint}); "
                "or choose a new --study-dir"
            )
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(
            self.directory / "space.yaml", yaml.safe_dump(settings.space, sort_keys=False)
        )
        write_atomically(self.settings_file, json.dumps(asdict(settings), indent=2) + "\n")

    def load(self) -> StudySettings:
        try:
            raw = json.loads(self.settings_file.read_text(encoding="utf-8"))
            return StudySettings(**raw)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(
                f"{self.settings_file}: not a readable brickwork study ({error}); "
                "pass the folder `brickwork tune` created with --study-dir"
            ) from None

    def resume(self, settings: StudySettings) -> StudySettings:
        """The saved settings, with this command's budget; a different search is refused."""
        saved = self.load()
        differ = settings.same_search(saved)
        if differ:
            shown = ", ".join(
                f"{k} ({getattr(saved, k)!r} -> {getattr(settings, k)!r})" for k in differ
            )
            raise ConfigError(
                f"--resume {self.directory}: this command searches differently: {shown}; "
                "run the study's own command again, or start a new --study-dir"
            )
        saved.num_trials, saved.timeout_s = settings.num_trials, settings.timeout_s
        saved.workers, saved.ray = settings.workers, settings.ray
        write_atomically(self.settings_file, json.dumps(asdict(saved), indent=2) + "\n")
        return saved


def read_num_epochs(run_dir: str | None) -> int | None:
    """Epochs a trial trained, from its run folder's `summary.json` (None while unknown)."""
    if run_dir is None:
        return None
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
        return int(summary["num_epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
