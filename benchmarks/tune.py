"""Does pruning pay? A TPE study with Hyperband pruning against the same study unpruned.

On digits (an MLP), both studies search the same space with the same
seed and budget (24 trials of up to `--epochs` epochs each). Reported: the best
validation accuracy reached, the epochs trained over all trials, the wall time; and
the ratios pruned/unpruned. The goal: within 0.5 points of the unpruned best with at
most 40% of its epochs.

The default budget is 20 epochs, the shipped digits config's own `trainer.max_epochs`.
Hyperband's savings grow with max/min resource: with reduction factor 3 from 1 epoch,
8 epochs leave two brackets with rungs at epochs 1 and 3 only, so even a perfect
successive halving trains about 40% of the unpruned epochs; 20 epochs give three
brackets with rungs at 1, 3 and 9.

Every trial trains on one CPU thread (both studies alike): on a shared machine, torch's
intra-op threads waiting for each other made a digits MLP 20 times slower.

It also measures what a trial saves by running inside the study's process: a fresh
`python -m brickwork train` of one trial's config (interpreter, torch and brickwork
start-up included) against the same trial trained in-process by the study.

    python benchmarks/tune.py [--trials 24] [--epochs 20]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from brickwork.cli import main as brickwork
from brickwork.config import load_config
from brickwork.tune.trial import run_trial

SPACE = """\
optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
optimizer.weight_decay: {loguniform: [1.0e-5, 1.0e-1]}
model.dropout: {uniform: [0.0, 0.5]}
"""
COMMON = [
    "model.name=mlp",  # the MLP: a 24-trial study twice fits in minutes on a laptop CPU
    "scheduler=null",
    "trainer.test_after_fit=false",
    "loggers.tensorboard.enabled=false",
    "loggers.progress_bar=false",
    "early_stopping=null",
    "checkpoint.keep_k=0",
]


def run_study(folder: Path, pruner: str, trials: int, epochs: int) -> dict[str, float]:
    space = folder.parent / "space.yaml"
    space.write_text(SPACE)
    started = time.perf_counter()
    code = brickwork(
        [
            "tune",
            "--space",
            str(space),
            "--trials",
            str(trials),
            "--sampler",
            "tpe",
            "--pruner",
            pruner,
            "--study-dir",
            str(folder),
            f"trainer.max_epochs={epochs}",
            *COMMON,
        ]
    )
    wall = time.perf_counter() - started
    assert code == 0, f"study exited {code}"
    with (folder / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    best = max(float(r["val/acc"]) for r in rows if r["state"] == "complete")
    return {
        "best": best,
        "epochs": sum(int(r["epochs"] or 0) for r in rows),
        "pruned": sum(r["state"] == "pruned" for r in rows),
        "wall": wall,
    }


def measure_startup(epochs: int, root: Path) -> tuple[float, float]:
    """(fresh process wall time, in-process trial wall time) of the same one-trial config."""
    overrides = [f"trainer.max_epochs={epochs}", *COMMON]
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "brickwork", "train", "--run-dir", str(root / "fresh"), *overrides],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    fresh = time.perf_counter() - started
    config = load_config(None, overrides)
    run_trial(config, root / "first", None, [])  # the study's first trial paid the imports
    started = time.perf_counter()
    run_trial(config, root / "in-process", None, [])
    return fresh, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--pruners",
        nargs="+",
        choices=("none", "hyperband"),
        default=["none", "hyperband"],
        help="run only these studies (e.g. the two in separate processes on a busy machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for pruner in args.pruners:
            results[pruner] = run_study(root / pruner, pruner, args.trials, args.epochs)
        fresh, warm = measure_startup(2, root)
    print(f"\n{args.trials}-trial TPE study on digits, up to {args.epochs} epochs per trial:\n")
    print("| study | best val acc | epochs trained | pruned trials | wall time |")
    print("| --- | --- | --- | --- | --- |")
    for name, result in results.items():
        print(
            f"| {name} | {100 * result['best']:.2f}% | {result['epochs']:.0f} | "
            f"{result['pruned']:.0f} | {result['wall']:.0f} s |"
        )
    if len(results) == 2:
        unpruned, pruned = results["none"], results["hyperband"]
        print(
            f"| ratio | {100 * (pruned['best'] - unpruned['best']):+.2f} points | "
            f"{pruned['epochs'] / unpruned['epochs']:.2f} | | "
            f"{pruned['wall'] / unpruned['wall']:.2f} |"
        )
    print(
        f"\none 2-epoch trial: fresh `brickwork train` process {fresh:.1f} s, "
        f"in the study's process {warm:.1f} s (start-up saved per trial: {fresh - warm:.1f} s)"
    )


if __name__ == "__main__":
    main()
