"""One Ray Tune trial: an ordinary brickwork run inside a Ray worker, and its checkpoints.

The trial reports the metric after each validation, once the epoch's checkpoint is on
disk, and (for the schedulers that pause and exploit: HyperBand, BOHB's HyperBand and
PBT) hands Ray that brickwork checkpoint, hard-linked, with its SHA-256:

- a paused trial resumes from its own checkpoint with brickwork's exact resume;
- an exploiting trial (PBT) copies the donor's checkpoint into its own run folder,
  checks the hash, records donor, checkpoint and hash in `exploits.jsonl`, and resumes
  from it under its new (perturbed) learning rate or weight decay.

When Ray's scheduler pauses or stops a trial, Ray ends the trial's thread from inside
`tune.report` (a `SystemExit`). The reporter turns that into a stop of the loop before
the next epoch's first step, so the run folder says what happened: `preempted` for a
paused trial (it continues from this checkpoint when the scheduler resumes it; PBT
pauses to exploit), `pruned` for a trial the scheduler stopped. The study tells the
trial which one through a decision file (`decisions_dir`), written before Ray acts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from brickwork.distributed import is_main_process
from brickwork.errors import ConfigError
from brickwork.files import write_atomically
from brickwork.stop import StopKind
from brickwork.tune.study import StudyFolder, StudySettings
from brickwork.tune.trial import TrialReporter, run_trial

log = logging.getLogger("brickwork")
OBJECTIVE = "objective"  # the key trials report; Ray flattens keys with "/" in them
POINTER = "brickwork.json"
PAUSE, STOP = "pause", "stop"  # what the scheduler decided, as the decision file says


def decisions_dir(folder: StudyFolder) -> Path:
    """Where the study writes, per Ray trial id, the scheduler's last pause or stop."""
    return folder.directory / "ray" / "decisions"


def needs_checkpoints(settings: StudySettings) -> bool:
    """Whether the scheduler pauses or exploits trials (they then resume from checkpoints)."""
    return settings.pruner in ("pbt", "hyperband") or settings.sampler == "bohb"


class RayTrainable:
    """The function Ray runs per trial (a class so Ray can pickle the settings it carries)."""

    def __init__(self, settings: StudySettings, folder: StudyFolder) -> None:
        self.settings, self.study_dir = asdict(settings), str(folder.directory.resolve())

    def __call__(self, ray_config: dict[str, Any]) -> None:
        from ray import tune

        settings = StudySettings(**self.settings)
        folder = StudyFolder(Path(self.study_dir))
        space = settings.search_space
        overrides = space.to_overrides({p.key: ray_config[p.key] for p in space.params})
        trial_id = tune.get_context().get_trial_id()
        run_dir = folder.trials_dir / f"trial-{trial_id}"
        config = settings.trial_config(overrides)
        resume_from, exploited = _restore(tune.get_checkpoint(), run_dir)
        reporter = RayReporter(settings, run_dir, decisions_dir(folder) / trial_id)
        run_trial(config, run_dir, resume_from, [reporter], resume_force=exploited)
        if reporter.ended_by_ray:
            # Ray ended this thread from inside `tune.report`; returning normally would
            # make Ray's wrapper report once more and wait for an answer that never comes.
            raise SystemExit(0)


class RayReporter(TrialReporter):
    """Report after each epoch's checkpoint is written (at the next epoch's start, or the end)."""

    def __init__(self, settings: StudySettings, run_dir: Path, decision_file: Path) -> None:
        super().__init__(settings.metric, settings.mode)
        self.run_dir, self.decision_file = run_dir, decision_file
        self.with_checkpoints = needs_checkpoints(settings)
        self.default = PAUSE if settings.pruner == "pbt" else ""  # PBT only ever pauses
        self.pending: dict[str, Any] | None = None
        self.ended_by_ray = False

    def on_fit_start(self, state: Any) -> None:
        """`ray.json` in the run folder: which Ray trial this is, where it ran, on what."""
        import ray
        from ray import tune

        if not is_main_process():
            return
        context = tune.get_context()
        record = {
            "trial_id": context.get_trial_id(),
            "ray_trial_dir": Path(context.get_trial_dir()).name,  # the study's own map
            "node_ip": ray.util.get_node_ip_address(),
            "resources": dict(context.get_trial_resources().required_resources),
        }
        write_atomically(self.run_dir / "ray.json", json.dumps(record, indent=2) + "\n")

    def on_validation_end(self, state: Any, metrics: dict[str, float]) -> None:
        super().on_validation_end(state, metrics)
        self.pending = {OBJECTIVE: self.last, "epoch": state.epoch + 1, "step": state.step}

    def on_epoch_start(self, state: Any) -> None:
        if self._send():
            kind, detail = self._ended_how(state.epoch)
            log.info("%s: %s", kind.value, detail)  # train.log keeps it past a resume
            state.request_stop(kind, detail)  # the loop stops before this epoch's first step

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        if StopKind(summary["stop"]["kind"]).finished:
            self._send()  # the run is over: whatever Ray decides now, its summary stands

    def _send(self) -> bool:
        """Report the pending metrics; True when Ray paused or stopped the trial meanwhile."""
        from ray import tune

        if self.pending is None or self.ended_by_ray:
            return False
        metrics, self.pending = self.pending, None
        try:
            if not self.with_checkpoints:
                tune.report(metrics)
                return False
            with tempfile.TemporaryDirectory() as scratch:
                link_checkpoint(self.run_dir, Path(scratch))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(scratch))
        except SystemExit:  # how Ray ends a trial's thread when it pauses or stops it
            self.ended_by_ray = True
        return self.ended_by_ray

    def _ended_how(self, epoch: int) -> tuple[StopKind, str]:
        """The stop that says what Ray's scheduler decided (its decision file, read once)."""
        try:
            decision = self.decision_file.read_text(encoding="utf-8").strip()
            self.decision_file.unlink()
        except OSError:
            decision = self.default
        if decision == STOP:
            return StopKind.PRUNED, f"stopped by Ray Tune's scheduler after epoch {epoch}"
        if decision == PAUSE:
            return StopKind.PREEMPTED, (
                f"paused by Ray Tune's scheduler after epoch {epoch}; "
                "it continues from this checkpoint when the scheduler resumes it"
            )
        return StopKind.PREEMPTED, f"stopped by Ray Tune after epoch {epoch} (the study ended)"


def link_checkpoint(run_dir: Path, into: Path) -> None:
    """The run's last checkpoint, hard-linked (no copy), and a pointer naming run and hash."""
    from brickwork.checkpoint import resolve_checkpoint

    source = resolve_checkpoint(run_dir)
    target = into / source.name
    target.mkdir()
    for file in sorted(source.iterdir()):
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)
    pointer = {"run_dir": str(run_dir), "checkpoint": source.name, "sha256": hash_folder(source)}
    (into / POINTER).write_text(json.dumps(pointer))


def _restore(checkpoint: Any, run_dir: Path) -> tuple[Path | None, bool]:
    """Where to resume: None (fresh), own checkpoint (paused), or a donor's (exploited)."""
    if checkpoint is None:
        return None, False
    with checkpoint.as_directory() as folder:
        pointer = json.loads((Path(folder) / POINTER).read_text())
        source = Path(folder) / pointer["checkpoint"]
        digest = hash_folder(source)
        if digest != pointer["sha256"]:
            raise ConfigError(f"{source}: checkpoint hash {digest} != {pointer['sha256']}")
        own = pointer["run_dir"] == str(run_dir)
        target = run_dir / "checkpoints" / pointer["checkpoint"]
        if not own:  # exploit: the donor's weights replace this trial's
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        if not target.exists():
            shutil.copytree(source, target)
    if not own:
        record = {**pointer, "donor_run_dir": pointer["run_dir"], "copied_to": str(target)}
        with (run_dir / "exploits.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return target, not own


def hash_folder(folder: Path) -> str:
    """SHA-256 over a checkpoint folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
