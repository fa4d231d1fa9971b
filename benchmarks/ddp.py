"""Training steps per second with 1 and 2 DDP processes (gloo on CPU, or NCCL on GPUs).

Run it with:

    PYTHONPATH=src python benchmarks/ddp.py                  # 1 and 2 processes
    PYTHONPATH=src python benchmarks/ddp.py --processes 1 2 4 --steps 100

Each size runs `torchrun --standalone --nproc-per-node=N benchmarks/ddp.py --worker`,
which trains the default digits CNN through `brickwork.fit` with a per-process batch
of `--batch-size` (so N processes consume N times the samples per step). Only
steps inside an epoch are timed: validation and checkpoint writes at epoch ends
are left out. Each process uses `--threads` CPU threads (default 1, what torchrun
sets for several processes), so the 1-process number is comparable.

The worker also times the one all_reduce of one integer that every optimizer step
pays for the agreed stop (preemption and early stopping on every rank at the same
step), and reports it as a share of a step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OVERRIDES = [
    "trainer.max_epochs=null",
    "trainer.test_after_fit=false",
    "trainer.log_every_n_steps=1000",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
    "early_stopping=null",
]


class StepTimer:
    """Callback: wall time between consecutive optimizer steps of the same epoch."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.durations: list[float] = []
        self._last: float | None = None

    def on_epoch_start(self, state: Any) -> None:
        self._last = None  # the gap across an epoch end holds validation: not a step

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        now = time.perf_counter()
        if self._last is not None and state.step > self.warmup_steps:
            self.durations.append(now - self._last)
        self._last = now


def run_worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    import brickwork

    torch.set_num_threads(args.threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    flag_us = None
    if world_size > 1:
        dist.init_process_group("gloo")  # fit uses (and leaves alone) the caller's group
        flag_us = _time_flag_all_reduce(dist, torch)
    timer = StepTimer(args.warmup_steps)
    overrides = [*OVERRIDES, f"trainer.max_steps={args.steps}"]
    overrides.append(f"data.batch_size={args.batch_size}")
    brickwork.fit(None, overrides=overrides, run_dir=args.run_dir, callbacks=[timer])
    step_s = sum(timer.durations) / max(len(timer.durations), 1)
    if int(os.environ.get("RANK", "0")) == 0:
        result = {
            "processes": world_size,
            "steps_per_s": 1 / step_s,
            "samples_per_s": world_size * args.batch_size / step_s,
            "timed_steps": len(timer.durations),
            "stop_flag_all_reduce_us": flag_us,
            "stop_flag_share_of_step": flag_us / 1e6 / step_s if flag_us else 0.0,
        }
        Path(args.out).write_text(json.dumps(result))
    if world_size > 1:
        dist.destroy_process_group()


def _time_flag_all_reduce(dist: Any, torch: Any, repeats: int = 300) -> float:
    """Microseconds per all_reduce of one integer, as `stop.agree_stop` does every step."""
    flag = torch.zeros(1, dtype=torch.int64)
    for _ in range(20):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    started = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        flag.item()
    return (time.perf_counter() - started) / repeats * 1e6


def run_driver(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for processes in args.processes:
            out = Path(scratch) / f"result-{processes}.json"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            command += [f"--nproc-per-node={processes}", __file__, "--worker", "--out", str(out)]
            command += ["--run-dir", str(Path(scratch) / f"run-{processes}")]
            command += [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in _SHARED]
            subprocess.run(
                command, check=True, capture_output=not args.verbose, cwd=scratch, env=_env()
            )
            results.append(json.loads(out.read_text()))
    return results


_SHARED = ("steps", "warmup-steps", "batch-size", "threads")


def _env() -> dict[str, str]:
    """The ranks import this checkout's brickwork, whatever their working directory."""
    source = str(Path(__file__).resolve().parents[1] / "src")
    paths = [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--verbose", action="store_true", help="show the runs' output")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    results = run_driver(args)
    base = results[0]["steps_per_s"]
    print(f"{'processes':>9} {'steps/s':>9} {'samples/s':>10} {'vs first':>9} {'stop flag':>14}")
    for r in results:
        flag = (
            f"{r['stop_flag_all_reduce_us']:.0f} us {100 * r['stop_flag_share_of_step']:.1f}%"
            if r["stop_flag_all_reduce_us"]
            else "-"
        )
        print(
            f"{r['processes']:>9} {r['steps_per_s']:>9.1f} {r['samples_per_s']:>10.0f} "
            f"{r['steps_per_s'] / base:>8.2f}x {flag:>14}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
