"""How much does brickwork cost over a hand-written PyTorch loop?

The same model, data (the digits splits), seed and hyperparameters (AdamW, lr 3e-3,
no schedule) are trained three ways, interleaved round by round so machine noise
hits each alike. Two models: `cnn`, the default small CNN, and `tiny`, one linear
layer (64 -> 10), whose step is almost pure framework cost:

- `plain`: the loop you would write yourself (zero_grad, forward, loss, backward,
  step; validation under no_grad each epoch);
- `brickwork`: `brickwork.fit` with its default logging on (metrics file, console
  lines, TensorBoard scalars/graph/histograms/image grid, checkpoints each epoch);
- `lightning`: Lightning's Trainer on the same module, when `lightning` is installed.

Reported per model and batch size: the median time per optimizer step, the time each
loop adds per step over the plain one (the median over rounds of each round's paired
difference, with the lowest and highest round: the spread is the machine's noise),
and the whole-run wall time, as ratios to the plain loop (1.00 = no overhead).

    python benchmarks/overhead.py [--epochs 5] [--rounds 3] [--cases cnn:32 cnn:128 tiny:32] \
        [--clock wall|cpu] [--threads N]

On a machine shared with other jobs, wall-clock step times mostly measure who else ran:
`--clock cpu --threads 1` times each step by this process's CPU time instead (all its
threads: TensorBoard's writer included), which leaves out the time it sat descheduled.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from brickwork.data.digits import build_digits
from brickwork.loop import fit
from brickwork.models.basic import MLP, SmallCNN

SEED = 0
LR = 3e-3
# What step stamps read: wall time by default, or this process's CPU time (`--clock cpu`).
CLOCK = [time.perf_counter]
THREADS = [0]  # intra-op threads for every run (`--threads`); 0: torch's default
# How brickwork's config names each model.
MODEL_OVERRIDES = {"cnn": [], "tiny": ["model={name: mlp, hidden_sizes: [], dropout: 0}"]}


def build_model(name: str) -> nn.Module:
    """The same module brickwork builds for `MODEL_OVERRIDES[name]`."""
    if name == "tiny":
        return MLP((1, 8, 8), 10, hidden_sizes=[], dropout=0)
    return SmallCNN(in_channels=1, num_classes=10)


def brickwork_run(
    batch_size: int, epochs: int, folder: Path, model: str = "cnn"
) -> tuple[list[float], float]:
    """Step timestamps and wall time of `brickwork.fit` with default logging."""
    stamps: list[float] = []

    class StepClock:
        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            stamps.append(CLOCK[0]())

    overrides = [
        f"seed={SEED}",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={epochs}",
        "scheduler=null",
        f"optimizer.lr={LR}",
        "optimizer.weight_decay=0.01",
        "loss.label_smoothing=0",
        "early_stopping=null",
        "trainer.test_after_fit=false",
        "trainer.device=cpu",
        *MODEL_OVERRIDES[model],
    ]
    started = time.perf_counter()
    fit(None, overrides=overrides, run_dir=folder, callbacks=[StepClock()])
    return stamps, time.perf_counter() - started


def plain_run(batch_size: int, epochs: int, model_name: str = "cnn") -> tuple[list[float], float]:
    """The hand-written loop, doing what a careful user would."""
    started = time.perf_counter()
    torch.manual_seed(SEED)
    data = build_digits(seed=42)
    model = build_model(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    train = DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator)
    val = DataLoader(data.val, batch_size=batch_size)
    stamps: list[float] = []
    for epoch in range(epochs):
        model.train()
        running = torch.zeros(())
        for inputs, targets in train:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            running += loss.detach()
            stamps.append(CLOCK[0]())
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, targets in val:
                correct += int((model(inputs).argmax(1) == targets).sum())
                total += len(targets)
        print(
            f"  plain epoch {epoch + 1}: loss {running.item() / len(train):.4f} "
            f"val acc {correct / total:.4f}"
        )
    return stamps, time.perf_counter() - started


def lightning_run(
    batch_size: int, epochs: int, folder: Path, model_name: str = "cnn"
) -> tuple[list[float], float] | None:
    """Lightning's Trainer on the same module, default logger and checkpointing."""
    try:
        import lightning as L
    except ImportError:
        return None
    started = time.perf_counter()
    stamps: list[float] = []

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model(model_name)
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.loss_fn(self.model(batch[0]), batch[1])
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            logits = self.model(batch[0])
            self.log("val/loss", self.loss_fn(logits, batch[1]))
            self.log("val/acc", (logits.argmax(1) == batch[1]).float().mean())

        def on_train_batch_end(self, *args: Any) -> None:
            stamps.append(CLOCK[0]())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=LR, weight_decay=0.01)

    L.seed_everything(SEED, verbose=False)
    data = build_digits(seed=42)
    generator = torch.Generator().manual_seed(SEED)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(folder),
        enable_model_summary=False,
        enable_progress_bar=False,
        log_every_n_steps=10,
    )
    trainer.fit(
        Module(),
        DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(data.val, batch_size=batch_size),
    )
    return stamps, time.perf_counter() - started


def median_step_s(stamps: list[float]) -> float:
    """Median gap between consecutive steps; epoch-boundary gaps (validation) are outliers."""
    return statistics.median(b - a for a, b in itertools.pairwise(stamps))


def run_loop(
    name: str, model: str, batch_size: int, epochs: int, folder: Path
) -> tuple[list[float], float] | None:
    """One run of the loop `name`: step timestamps and wall time (None: not installed)."""
    if THREADS[0] > 0:  # again before each run: Lightning may set its own count
        torch.set_num_threads(THREADS[0])
    if name == "plain":
        return plain_run(batch_size, epochs, model)
    if name == "brickwork":
        return brickwork_run(batch_size, epochs, folder, model)
    return lightning_run(batch_size, epochs, folder / "lightning", model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["cnn:32", "cnn:128", "tiny:32"])
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="step times from the wall clock, or from the process's CPU time (steadier on a "
        "shared machine: time spent descheduled is not counted; use with --threads 1)",
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: default")
    args = parser.parse_args()
    THREADS[0] = args.threads
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    print(
        f"clock {args.clock}, threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases:
            model, batch_size = case.split(":")[0], int(case.split(":")[1])
            results: dict[str, list[tuple[float, float]]] = {}
            for r in range(args.rounds):
                folder = Path(scratch) / f"{model}-{batch_size}-{r}"
                for name in ("plain", "brickwork", "lightning"):
                    outcome = run_loop(name, model, batch_size, args.epochs, folder)
                    if outcome is not None:
                        stamps, wall = outcome
                        results.setdefault(name, []).append((median_step_s(stamps), wall))
            rows.extend(summarize(model, batch_size, results))
    print(
        f"\n{'model':<5} {'batch':>5} {'loop':<10} {'ms/step':>8} {'+ms/step':>8} "
        f"{'(rounds: low..high)':>19} {'step ratio':>10} {'wall s':>7} {'wall ratio':>10}"
    )
    for model, batch_size, name, step_ms, added, low, high, step_ratio, wall, wall_ratio in rows:
        spread = f"{low:+.3f}..{high:+.3f}"
        print(
            f"{model:<5} {batch_size:>5} {name:<10} {step_ms:>8.3f} {added:>+8.3f} {spread:>19} "
            f"{step_ratio:>10.3f} {wall:>7.2f} {wall_ratio:>10.3f}"
        )


def summarize(
    model: str, batch_size: int, results: dict[str, list[tuple[float, float]]]
) -> list[tuple[Any, ...]]:
    """One row per loop. The ms added per step is the median over rounds of the
    difference to the plain loop *of the same round* (paired: a round the machine was
    slow in is slow for both), with the lowest and highest round beside it."""
    base_step = statistics.median(s for s, _ in results["plain"])
    base_wall = statistics.median(w for _, w in results["plain"])
    rows = []
    for name, values in results.items():
        added = [(s - p) * 1e3 for (s, _), (p, _) in zip(values, results["plain"], strict=True)]
        step = statistics.median(s for s, _ in values)
        wall = statistics.median(w for _, w in values)
        rows.append(
            (
                model,
                batch_size,
                name,
                step * 1e3,
                statistics.median(added),
                min(added),
                max(added),
                step / base_step,
                wall,
                wall / base_wall,
            )
        )
    return rows


if __name__ == "__main__":
    main()
