"""One trial: an ordinary `brickwork.fit` run plus a callback that reports to the search.

The trial runs in the search's own process, so every trial after the first reuses
the imported Python modules and torch (no interpreter start-up per trial). Its console
output goes to its `train.log` only: the study prints one line per finished trial.

`TrialReporter` sends the monitored metric to the engine after every validation. On
a "prune" answer it asks the loop for a `PRUNED` stop; the loop's stop agreement then
spreads that decision to every rank, so under DDP only rank 0 asks the engine and all
ranks stop at the same validation boundary, with a checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brickwork.callbacks import improved
from brickwork.config import Config
from brickwork.distributed import is_main_process
from brickwork.errors import ConfigError
from brickwork.stop import StopKind

# (value, epoch) -> whether to prune now; called on rank 0 only.
Judge = Callable[[float, int], bool]


class TrialReporter:
    """Report `metric` after each validation, keep its best value, stop when judged hopeless."""

    state_key = "tune"

    def __init__(self, metric: str, mode: str, judge: Judge | None = None) -> None:
        self.metric, self.mode, self.judge = metric, mode, judge
        self.best: float | None = None
        self.last: float | None = None

    def on_validation_end(self, state: Any, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise ConfigError(
                f"tune metric '{self.metric}' is not among the validation metrics "
                f"({', '.join(sorted(metrics))}); set --metric or tune.metric to one of them"
            )
        value = float(metrics[self.metric])
        self.last = value
        if improved(value, self.best, self.mode):
            self.best = value
        epoch = state.epoch + 1  # validations count finished epochs: the pruners' resource
        if self.judge is not None and is_main_process() and self.judge(value, epoch):
            state.request_stop(
                StopKind.PRUNED, f"pruned after epoch {epoch}: {self.metric}={value:.4g}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.last = state.get("best"), state.get("last")


def run_trial(
    config: Config,
    run_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    resume_force: bool = False,
) -> dict[str, Any]:
    """Train one trial in this process; its console lines go to `train.log` only.

    `resume_force` lets a trial continue from a checkpoint trained under other values
    (PBT's exploit: a donor's weights under this trial's perturbed learning rate).
    """
    from brickwork.loop import fit

    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            if resume_from is not None:
                return fit(
                    config, resume=resume_from, resume_force=resume_force, callbacks=callbacks
                )
            return fit(config, run_dir=run_dir, callbacks=callbacks)
    finally:
        _release_memory()


def describe_failure(error: BaseException) -> str:
    """One line for the table: the exception's type and first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300]


def _release_memory() -> None:
    """A failed trial (an out-of-memory) must not leave its tensors to the next one."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
