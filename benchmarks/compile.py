"""What does `trainer.compile` buy? Steps/s and whole-run time with and without it.

The digits CNN trains through `brickwork.fit` twice per round, interleaved:
`trainer.compile=false` and `trainer.compile=true` (inductor). Reported per setting:

- `ms/step` and `steps/s`: the median step once compiled (the first epoch, which holds
  the compilation, is left out; so are epoch-boundary gaps, which validate);
- `1st epoch s`: the first epoch (wall time), compilation included;
- `wall s`: the whole run, compilation included. Both are the first round's, the only
  one that compiles from nothing: each compiled run gets its own empty
  `TORCHINDUCTOR_CACHE_DIR`, but later rounds of the same process still find the C++
  kernels inductor keeps in memory;
- `graphs`, `frames`, `breaks`: dynamo's counters for the run (graphs compiled, frames
  compiled, graph breaks). One graph and one frame mean the model compiled once and
  never recompiled; `data.drop_last=true` keeps one batch shape for that.

Threads: by default the run uses one intra-op thread (`--threads 1`). On a machine
shared with other jobs, inductor's C++ kernels each open an OpenMP parallel region, and
a region whose second thread is descheduled waits for it at the barrier: that is how an
earlier run measured 258 ms/step compiled against 14 ms uncompiled. Eager kernels on
these small tensors stay single-threaded, so they hardly notice. `--threads 0` keeps
torch's default (one thread per core), for a machine that is yours alone. On a machine
shared with other jobs, `--clock cpu` times the steps by this process's CPU time, which
leaves out the time it sat descheduled (the whole-run columns stay wall time).

    PYTHONPATH=src python benchmarks/compile.py [--epochs 4] [--rounds 2] [--batch-size 64] \
        [--threads 1] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brickwork.loop import fit

# What step stamps read: wall time by default, or this process's CPU time (`--clock cpu`).
CLOCK = [time.perf_counter]


@dataclass
class Outcome:
    """One run's figures."""

    step_s: float  # median step once compiled
    first_epoch_s: float  # the first epoch's steps, compilation included
    wall_s: float  # the whole run
    graphs: int
    frames: int
    breaks: int


def run(compiled: bool, epochs: int, batch_size: int, folder: Path) -> Outcome:
    """Train once; the step clock sees every optimizer step."""
    from torch._dynamo.utils import counters

    stamps: dict[int, list[float]] = {}  # per epoch: its start, then each step's end
    walls: dict[int, float] = {}  # wall time at each epoch's start; -1: the latest step

    class StepClock:
        def on_epoch_start(self, state: Any) -> None:
            stamps.setdefault(state.epoch, []).append(CLOCK[0]())
            walls.setdefault(state.epoch, time.perf_counter())

        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            stamps[state.epoch].append(CLOCK[0]())
            walls[-1] = time.perf_counter()

    overrides = [
        f"data.batch_size={batch_size}",
        "data.drop_last=true",
        f"trainer.max_epochs={epochs}",
        f"trainer.compile={str(compiled).lower()}",
        "trainer.device=cpu",
        "trainer.test_after_fit=false",
        "loggers.progress_bar=false",
        "loggers.tensorboard.enabled=false",
        "early_stopping=null",
    ]
    torch._dynamo.reset()
    counters.clear()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor-cache")  # cold cache
    started = time.perf_counter()
    fit(None, overrides=overrides, run_dir=folder / "run", callbacks=[StepClock()])
    wall = time.perf_counter() - started
    steady = [b - a for epoch in sorted(stamps)[1:] for a, b in itertools.pairwise(stamps[epoch])]
    first_epoch = min(stamps)
    first_end = walls.get(first_epoch + 1, walls[-1])  # the next epoch's start, or the end
    return Outcome(
        step_s=statistics.median(steady),
        first_epoch_s=first_end - walls[first_epoch],
        wall_s=wall,
        graphs=int(counters["stats"]["unique_graphs"]),
        frames=int(counters["frames"]["total"]),
        breaks=sum(counters["graph_break"].values()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads; 0: default")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="step times (not the whole-run times) from the wall clock or the process's CPU time",
    )
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch holds the compilation")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"clock {args.clock}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results: dict[bool, list[Outcome]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for compiled in (False, True):
                folder = Path(scratch) / f"{compiled}-{r}"
                results[compiled].append(run(compiled, args.epochs, args.batch_size, folder))
    base = statistics.median(o.step_s for o in results[False])
    print(
        f"{'compile':<8} {'ms/step':>8} {'steps/s':>8} {'speed-up':>8} {'1st epoch s':>11} "
        f"{'wall s':>7} {'graphs':>6} {'frames':>6} {'breaks':>6}"
    )
    for compiled, outcomes in results.items():
        step = statistics.median(o.step_s for o in outcomes)
        first, wall = outcomes[0].first_epoch_s, outcomes[0].wall_s  # the coldest round
        last = outcomes[-1]
        print(
            f"{str(compiled).lower():<8} {step * 1e3:>8.3f} {1 / step:>8.1f} "
            f"{base / step:>8.2f} {first:>11.1f} {wall:>7.1f} {last.graphs:>6} "
            f"{last.frames:>6} {last.breaks:>6}"
        )


if __name__ == "__main__":
    main()
