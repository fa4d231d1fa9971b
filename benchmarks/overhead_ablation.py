"""Where does brickwork's per-step overhead come from? An ablation against the plain loop.

`benchmarks/overhead.py` compares whole loops. This script starts from the plain loop
and adds one brickwork ingredient at a time, interleaved round by round:

- `plain`: the hand-written loop of overhead.py;
- `loader`: the same loop fed by brickwork's loader (resumable sampler, seeded generator);
- `ops`: the same loop plus the loss bookkeeping `fit` does with one micro-batch
  per step (each loss kept unfolded, added up and read every 10th step);
- `loader+ops`: both;
- `fit`: `brickwork.fit` with default logging.

    python benchmarks/overhead_ablation.py [--rounds 4] [--epochs 5] [--batch-size 32] \
        [--model tiny]

It prints the median ms/step of each round; on a noisy machine compare the spread
across rounds before reading anything into a few percent.

    python benchmarks/overhead_ablation.py --count [--model tiny]

counts instead of timing, which no other job on the machine can disturb: the Python
bytecode instructions each step executes (`sys.settrace` opcode events) in the plain
loop and in `fit`, over all steps of each epoch but its first and last (no epoch-boundary
work), and where fit's extra ones run, function by function. It counts Python work only:
tensor operations brickwork adds (a few per step) cost time the count does not show.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.config import load_config
from brickwork.data.digits import build_digits
from brickwork.data.loader import build_dataloader
from brickwork.loop import fit
from brickwork.state import UnfoldedLosses
from overhead import (  # run as a script: benchmarks/ is on sys.path
    MODEL_OVERRIDES,
    brickwork_run,
    build_model,
)


def median_step_ms(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in itertools.pairwise(stamps)) * 1e3


def variant_run(variant: str, batch_size: int, epochs: int, model_name: str = "cnn") -> float:
    """Median ms/step of the plain loop with the ingredients named in `variant`."""
    torch.manual_seed(0)
    data = build_digits(seed=42)
    model = build_model(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    if "loader" in variant:
        config = load_config(None, [f"data.batch_size={batch_size}"])
        train = build_dataloader(data.train, config.data, train=True, seed=0)
    else:
        generator = torch.Generator().manual_seed(0)
        train = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator)
    unfolded, means = UnfoldedLosses(), []
    stamps: list[float] = []
    for epoch in range(epochs):
        if "loader" in variant:
            train.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        model.train()
        for inputs, targets in train:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            if "ops" in variant:  # what `fit` adds per step with one micro-batch
                unfolded.extend([(loss.detach(), len(targets))])  # no read, no tensor op
                if len(unfolded.losses) == 10:  # a logging step: the loss mean is read
                    total, count = unfolded.take_sum()
                    means.append(float(total) / count)  # type: ignore[arg-type]
            optimizer.step()
            stamps.append(time.perf_counter())
    return median_step_ms(stamps)


class OpcodeCounter:
    """Counts the bytecode instructions Python executes while on, per function."""

    def __init__(self) -> None:
        self.by_function: Counter[str] = Counter()
        self.num_steps = 0

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            where = code.co_filename.split("site-packages/")[-1].split("src/")[-1]
            self.by_function[f"{where}:{code.co_name}"] += 1
        return self._trace

    def start(self) -> None:
        """Trace new frames, and the running ones too (fit's loop is one long frame)."""
        frame = sys._getframe(1)
        while frame is not None:
            frame.f_trace, frame.f_trace_opcodes = self._trace, True
            frame = frame.f_back  # type: ignore[assignment]
        sys.settrace(self._trace)

    def stop(self, num_steps: int) -> None:
        sys.settrace(None)
        frame = sys._getframe(1)
        while frame is not None:
            frame.f_trace = None  # type: ignore[assignment]
            frame = frame.f_back  # type: ignore[assignment]
        self.num_steps += num_steps

    def per_step(self) -> dict[str, float]:
        return {k: v / self.num_steps for k, v in self.by_function.items()}


def count_plain(model_name: str, batch_size: int, epochs: int) -> OpcodeCounter:
    """Opcodes of the plain loop's steps 2..n-1 of each epoch (each step is one call)."""
    counter = OpcodeCounter()
    torch.manual_seed(0)
    data = build_digits(seed=42)
    model = build_model(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    train = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator)
    batches = iter(())

    def step() -> torch.Tensor:  # a function, so the tracer sees the step's own lines
        inputs, targets = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(epochs):
        batches = iter(train)
        running = step()
        counter.start()
        for _ in range(len(train) - 2):
            running += step()
        counter.stop(len(train) - 2)
        running += step()
    return counter


def count_fit(model_name: str, batch_size: int, epochs: int) -> OpcodeCounter:
    """Opcodes of fit's steps 2..n-1 of each epoch, from one step's end to the next."""
    counter = OpcodeCounter()
    steps_per_epoch = -(-1257 // batch_size)  # digits' training split

    class Window:
        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            if state.batch_in_epoch == 1:
                counter.start()
            elif state.batch_in_epoch == steps_per_epoch - 1:
                counter.stop(steps_per_epoch - 2)

    overrides = [
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        "scheduler=null",
        "trainer.test_after_fit=false",
        "trainer.device=cpu",
        *MODEL_OVERRIDES[model_name],
    ]
    with tempfile.TemporaryDirectory() as scratch:
        fit(None, overrides=overrides, run_dir=Path(scratch) / "run", callbacks=[Window()])
    return counter


def print_counts(model_name: str, batch_size: int, epochs: int) -> None:
    plain = count_plain(model_name, batch_size, epochs).per_step()
    ours = count_fit(model_name, batch_size, epochs).per_step()
    total_plain, total_ours = sum(plain.values()), sum(ours.values())
    print(f"Python opcodes per step: plain {total_plain:.0f}, fit {total_ours:.0f}")
    print(f"fit's extra: {total_ours - total_plain:+.0f}")
    extra = {k: ours.get(k, 0.0) - plain.get(k, 0.0) for k in set(plain) | set(ours)}
    for name, value in sorted(extra.items(), key=lambda kv: -abs(kv[1]))[:25]:
        print(f"{value:+8.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=["cnn", "tiny"], default="cnn")
    parser.add_argument("--count", action="store_true", help="count opcodes, do not time")
    args = parser.parse_args()
    if args.count:
        print_counts(args.model, args.batch_size, min(args.epochs, 2))
        return
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for variant in ("plain", "loader", "ops", "loader+ops", "fit"):
                with contextlib.redirect_stdout(io.StringIO()):
                    if variant == "fit":
                        folder = Path(scratch) / f"fit-{round_index}"
                        times, _ = brickwork_run(args.batch_size, args.epochs, folder, args.model)
                        ms = statistics.median(times) * 1e3
                    else:
                        ms = variant_run(variant, args.batch_size, args.epochs, args.model)
                results.setdefault(variant, []).append(ms)
    base = statistics.median(results["plain"])
    print(f"{'variant':<11} {'median ms':>9} {'ratio':>6}  rounds (ms/step)")
    for variant, values in results.items():
        middle = statistics.median(values)
        rounds = " ".join(f"{v:.2f}" for v in values)
        print(f"{variant:<11} {middle:>9.3f} {middle / base:>6.3f}  {rounds}")


if __name__ == "__main__":
    main()
