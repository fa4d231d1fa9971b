"""What does `trainer.compile` buy? Steps/s and whole-run time with and without it.

The digits CNN trains through `brickwork.fit` twice per round, interleaved:
`trainer.compile=false` and `trainer.compile=true` (inductor). Reported: the median
step time once compiled (steps of the first epoch, which include compilation, are
left out), steps/s, and the whole-run wall time including compilation.
`data.drop_last=true` keeps one batch shape, so the model compiles once.

    PYTHONPATH=src python benchmarks/compile.py [--epochs 4] [--rounds 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from brickwork.loop import fit


def run(compiled: bool, epochs: int, batch_size: int, folder: Path) -> tuple[float, float]:
    """Median seconds per step after the first epoch, and the run's wall time."""
    stamps: dict[int, list[float]] = {}

    class StepClock:
        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            stamps.setdefault(state.epoch, []).append(time.perf_counter())

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
    started = time.perf_counter()
    fit(None, overrides=overrides, run_dir=folder, callbacks=[StepClock()])
    wall = time.perf_counter() - started
    gaps = [b - a for epoch in sorted(stamps)[1:] for a, b in itertools.pairwise(stamps[epoch])]
    return statistics.median(gaps), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for compiled in (False, True):
                folder = Path(scratch) / f"{compiled}-{r}"
                results[compiled].append(run(compiled, args.epochs, args.batch_size, folder))
    base = statistics.median(s for s, _ in results[False])
    print(f"{'compile':<8} {'ms/step':>8} {'steps/s':>8} {'speed-up':>8} {'wall s':>7}")
    for compiled, values in results.items():
        step = statistics.median(s for s, _ in values)
        wall = statistics.median(w for _, w in values)
        print(
            f"{str(compiled).lower():<8} {step * 1e3:>8.3f} {1 / step:>8.1f} "
            f"{base / step:>8.2f} {wall:>7.1f}"
        )


if __name__ == "__main__":
    main()
