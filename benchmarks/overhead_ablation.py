"""Where does brickwork's per-step overhead come from? An ablation against the plain loop.

`benchmarks/overhead.py` compares whole loops. This script starts from the plain loop
and adds one brickwork ingredient at a time, interleaved round by round:

- `plain`: the hand-written loop of overhead.py;
- `loader`: the same loop fed by brickwork's loader (resumable sampler, seeded generator);
- `ops`: the same loop plus the per-step tensor work `fit` does with one micro-batch
  per step (the non-finite check, two running loss means);
- `loader+ops`: both;
- `fit`: `brickwork.fit` with default logging.

    python benchmarks/overhead_ablation.py [--rounds 4] [--epochs 5] [--batch-size 32] \
        [--model tiny]

It prints the median ms/step of each round; on a noisy machine compare the spread
across rounds before reading anything into a few percent.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.config import load_config
from brickwork.data.digits import build_digits
from brickwork.data.loader import build_dataloader
from brickwork.state import RunningMean
from overhead import brickwork_run, build_model  # run as a script: benchmarks/ is on sys.path


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
    interval, epoch_mean = RunningMean(), RunningMean()
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
                detached = loss.detach()  # no read: the finiteness flag is read at logging
                weighted = detached.float() * len(targets)
                interval.add_sum(weighted, len(targets))
                epoch_mean.add_sum(weighted, len(targets))
            optimizer.step()
            stamps.append(time.perf_counter())
    return median_step_ms(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=["cnn", "tiny"], default="cnn")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for variant in ("plain", "loader", "ops", "loader+ops", "fit"):
                with contextlib.redirect_stdout(io.StringIO()):
                    if variant == "fit":
                        folder = Path(scratch) / f"fit-{round_index}"
                        stamps, _ = brickwork_run(args.batch_size, args.epochs, folder, args.model)
                        ms = median_step_ms(stamps)
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
