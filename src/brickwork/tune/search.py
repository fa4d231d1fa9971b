"""Running a study to its end: pick the engine, start the workers, leave the table behind.

The study folder decides everything (its `study.json`), so a first run and a
`--resume` take the same path here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from brickwork.stop import EXIT_PREEMPTED
from brickwork.tune.report import finish_study
from brickwork.tune.study import StudyFolder, StudySettings, TrialRecord

log = logging.getLogger("brickwork")


def run_search(folder: StudyFolder) -> int:
    """Run the study in `folder` until its budget is spent; returns the exit code."""
    settings = folder.load()
    # Before any import of matplotlib here or in a worker (Ray's included): its font cache
    # and config go to the study folder, not ~/.cache and ~/.config.
    os.environ.setdefault("MPLCONFIGDIR", str((folder.directory / ".matplotlib").resolve()))
    if settings.engine == "ray":
        from brickwork.tune.ray_engine import run_ray_study

        records = run_ray_study(folder, settings)
        finish_study(folder, settings, records)
        return 0
    return _run_optuna(folder, settings)


def _run_optuna(folder: StudyFolder, settings: StudySettings) -> int:
    from brickwork.tune.optuna_engine import StudyInterrupted, open_study, records_of, run_worker

    _share_cores(settings.workers)
    workers = _start_workers(folder, settings.workers - 1)
    try:
        run_worker(folder, 0)
    except (StudyInterrupted, KeyboardInterrupt):
        _stop_workers(workers)
        print(
            f"brickwork tune: interrupted; continue with the same command and --resume "
            f"(--study-dir {folder.directory})",
            file=sys.stderr,
        )
        return EXIT_PREEMPTED
    for process in workers:
        process.wait()
    records: Sequence[TrialRecord] = records_of(open_study(folder, settings), settings.search_space)
    finish_study(folder, settings, records)
    return 0


def _share_cores(workers: int) -> None:
    """N workers on one machine: each trains on its share of the cores, not all of them.

    Torch's default of one thread per core in each of N processes makes them wait on each
    other (N times oversubscribed). A user's own OMP_NUM_THREADS is left as it is.
    """
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    share = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)  # the workers started next
    torch.set_num_threads(share)  # this process, worker 0
    log.info("%d workers: %d compute thread(s) each", workers, share)


def _start_workers(folder: StudyFolder, count: int) -> list[subprocess.Popen[bytes]]:
    """More processes on the same journal; each imports torch once for all its trials."""
    command = [sys.executable, "-m", "brickwork.tune.worker", str(folder.directory)]
    return [
        subprocess.Popen([*command, str(index + 1)], env=os.environ.copy())
        for index in range(count)
    ]


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM: each worker finishes its step, checkpoints its trial and exits."""
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        process.wait()
