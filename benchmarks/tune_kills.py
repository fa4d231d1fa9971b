"""Does a study survive `kill -9`? Five SIGKILLs of a whole study, then `--resume` to its end.

For `--workers 1` and `--workers 2`: a 6-trial TPE study on digits (an MLP, 3 epochs a
trial) is started, and five times SIGKILLed (the whole process group: the study and its
worker processes, as a lost machine or the out-of-memory killer of a container would)
at a random moment once a trial is training, then continued with the same command and
`--resume`. After the last run the script checks, from the journal and the run folders:

- duplicated completed trials: a point of the budget completed twice (0 expected);
- interrupted trials: each re-queued once with the same parameters, and where the
  killed trial had left a checkpoint, its re-run resumed from it (its `train.log` says
  "resumed from") instead of starting over;
- lock errors: "database is locked", journal lock errors or tracebacks in the output
  of every run (0 expected);
- the budget: exactly 6 completed trials, each trained to its last epoch.

    python benchmarks/tune_kills.py [--kills 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE = "optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}\nmodel.dropout: {uniform: [0.0, 0.3]}\n"
NUM_TRIALS, EPOCHS = 6, 3
OVERRIDES = [
    "model.name=mlp",
    "model.hidden_sizes=[32]",
    "scheduler=null",
    "early_stopping=null",
    "trainer.test_after_fit=false",
    "loggers.tensorboard.enabled=false",
    "loggers.progress_bar=false",
    f"trainer.max_epochs={EPOCHS}",
]
LOCK_WORDS = ("database is locked", "lockerror", "journal lock", "traceback")


def command(root: Path, workers: int) -> list[str]:
    space = root / "space.yaml"
    space.write_text(SPACE)
    return [
        sys.executable,
        "-m",
        "brickwork",
        "tune",
        "--space",
        str(space),
        "--trials",
        str(NUM_TRIALS),
        "--pruner",
        "none",
        "--workers",
        str(workers),
        "--study-dir",
        str(root / "study"),
        *OVERRIDES,
    ]


def newest_checkpoint(study: Path) -> float:
    """When a trial last wrote a checkpoint (0: never): the sign that training is under way."""
    times = [p.stat().st_mtime for p in study.glob("trials/trial-*/checkpoints/step-*")]
    return max(times, default=0.0)


def kill_while_training(argv: list[str], study: Path, draw: random.Random, log: Path) -> str:
    """Start the study, SIGKILL its process group at a random moment of a trial."""
    with log.open("a") as out:
        started = time.time()
        process = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 600
        while newest_checkpoint(study) <= started:
            if process.poll() is not None:
                return f"ended by itself (exit {process.returncode})"
            if time.monotonic() > deadline:
                raise TimeoutError("no trial trained within 10 minutes")
            time.sleep(0.1)
        time.sleep(draw.uniform(0.0, 3.0))  # somewhere in a trial: mid-epoch, in a save...
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return "killed"


def check(study: Path, logs: str) -> dict[str, Any]:
    import optuna

    from brickwork.tune.optuna_engine import STUDY_NAME

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study / "optuna.journal"))
    )
    trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") is not None]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    by_number = {t.number: t for t in trials}
    same_params = all(by_number[t.user_attrs["retry_of"]].params == t.params for t in retries)
    resumed = [t for t in retries if t.user_attrs.get("resume_from")]
    started_over = [
        t
        for t in retries
        if not t.user_attrs.get("resume_from")
        and any(
            Path(by_number[t.user_attrs["retry_of"]].user_attrs.get("run_dir") or "-").glob(
                "checkpoints/step-*"
            )
        )
    ]
    logs_say_resumed = all(
        "resumed from" in (Path(t.user_attrs["run_dir"]) / "train.log").read_text() for t in resumed
    )
    epochs = [
        json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())["num_epochs"]
        for t in complete
    ]
    return {
        "completed": len(complete),
        "duplicated completed": len(complete) - len({t.user_attrs["run_dir"] for t in complete}),
        "interrupted": len(interrupted),
        "re-queued": len(retries),
        "re-queued twice": len(retries) - len({t.user_attrs["retry_of"] for t in retries}),
        "same parameters": same_params,
        "resumed from a checkpoint": len(resumed),
        "train.log says resumed": logs_say_resumed,
        "started over though a checkpoint existed": len(started_over),
        "all trained to the last epoch": all(e == EPOCHS for e in epochs),
        "lock errors": sum(logs.lower().count(word) for word in LOCK_WORDS),
    }


def run(workers: int, kills: int, draw: random.Random, root: Path) -> dict[str, Any]:
    argv, study, log = command(root, workers), root / "study", root / "output.txt"
    outcomes = []
    for kill in range(kills):
        outcomes.append(kill_while_training(argv + ["--resume"] * (kill > 0), study, draw, log))
    with log.open("a") as out:
        final = subprocess.run([*argv, "--resume"], stdout=out, stderr=out).returncode
    result = check(study, log.read_text())
    result["kills"] = outcomes.count("killed")
    result["last exit code"] = final
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    draw = random.Random(args.seed)
    results = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            results[workers] = run(workers, args.kills, draw, Path(tmp))
    print(f"\n{NUM_TRIALS}-trial study, {EPOCHS} epochs a trial, {args.kills} SIGKILLs each:\n")
    print("| | --workers 1 | --workers 2 |")
    print("| --- | --- | --- |")
    for key in results[1]:
        print(f"| {key} | {results[1][key]} | {results[2][key]} |")


if __name__ == "__main__":
    main()
