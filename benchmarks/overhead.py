"""How much does brickwork cost over a hand-written PyTorch loop?

The same model, data (the digits splits), seed and hyperparameters (AdamW, lr 3e-3,
no schedule) are trained three ways. Two models: `cnn`, the default small CNN, and
`tiny`, one linear layer (64 -> 10), whose step is almost pure framework cost:

- `plain`: the loop you would write yourself (zero_grad, forward, loss, backward,
  step; validation under no_grad each epoch);
- `brickwork`: `brickwork.fit` with its default logging on (metrics file, console
  lines, TensorBoard scalars/graph/histograms/image grid, checkpoints each epoch);
- `lightning`: Lightning's Trainer on the same module, when `lightning` is installed.

Each round measures two things:

- The step cost, paired: brickwork (and Lightning) train with a hook that, after each
  of their steps, takes one step of the plain loop on its own model and loader. Each
  of their steps is timed from the end of the plain step before it, each plain step on
  its own, so a slow moment of the machine hits both members of a pair. Whole runs a
  second apart share no such moment on a VM whose speed drifts twofold within a
  minute. The price: the two loops evict each other's caches, so both read slower
  than alone; the difference between them is what the loop adds per step.
- The whole run: each loop alone, interleaved round by round, its wall time.

Reported per model and batch size: the median step of each loop and of its plain
partner, the ms the loop adds per step (the median over rounds of each round's
difference, with the lowest and highest round: the spread is the machine's noise), the
step ratio, and the whole-run wall time and its ratio to the plain loop's.

    python benchmarks/overhead.py [--epochs 5] [--rounds 3] [--cases cnn:32 cnn:128 tiny:32] \
        [--clock wall|cpu] [--threads N]

`--clock cpu --threads 1` times steps by this process's CPU time (all its threads:
TensorBoard's writer included) instead of the wall clock, which leaves out the time it
sat descheduled on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
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
# What step times read: wall time by default, or this process's CPU time (`--clock cpu`).
CLOCK = [time.perf_counter]
THREADS = [0]  # intra-op threads for every run (`--threads`); 0: torch's default
# How brickwork's config names each model.
MODEL_OVERRIDES = {"cnn": [], "tiny": ["model={name: mlp, hidden_sizes: [], dropout: 0}"]}
LOOPS = ("plain", "brickwork", "lightning")


def build_model(name: str) -> nn.Module:
    """The same module brickwork builds for `MODEL_OVERRIDES[name]`."""
    if name == "tiny":
        return MLP((1, 8, 8), 10, hidden_sizes=[], dropout=0)
    return SmallCNN(in_channels=1, num_classes=10)


class PlainLoop:
    """The hand-written loop, doing what a careful user would, one step per call."""

    def __init__(self, batch_size: int, model_name: str) -> None:
        torch.manual_seed(SEED)
        data = build_digits(seed=42)
        self.model = build_model(model_name)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.01)
        self.loss_fn = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(SEED)
        self.train = DataLoader(
            data.train, batch_size=batch_size, shuffle=True, generator=generator
        )
        self.val = DataLoader(data.val, batch_size=batch_size)
        self.batches = iter(self.train)
        self.running = torch.zeros(())
        self.step_times: list[float] = []

    def step(self) -> bool:
        """One step, timed; False when the epoch has no batch left (the next call starts one)."""
        started = CLOCK[0]()
        batch = next(self.batches, None)
        if batch is None:
            self.batches = iter(self.train)
            return False
        inputs, targets = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        self.running += loss.detach()
        self.step_times.append(CLOCK[0]() - started)
        return True

    def epoch(self) -> str:
        """A whole epoch and its validation; what it printed."""
        self.model.train()
        self.running = torch.zeros(())
        while self.step():
            pass
        self.model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, targets in self.val:
                correct += int((self.model(inputs).argmax(1) == targets).sum())
                total += len(targets)
        return f"loss {self.running.item() / len(self.train):.4f} val acc {correct / total:.4f}"


class StepTimer:
    """Times a loop's steps from one step's end to the next; with a `partner`, takes one
    plain step in between, timed on its own and not counted in the loop's step."""

    def __init__(self, partner: PlainLoop | None = None) -> None:
        self.partner = partner
        self.step_times: list[float] = []
        self._last: float | None = None

    def step_ended(self) -> None:
        now = CLOCK[0]()
        if self._last is not None:
            self.step_times.append(now - self._last)
        if self.partner is not None and not self.partner.step():
            self.partner.step()  # its epoch ran out: the first step of its next one
        self._last = CLOCK[0]()


def plain_run(batch_size: int, epochs: int, model_name: str = "cnn") -> tuple[list[float], float]:
    """The hand-written loop alone: its step times and wall time."""
    started = time.perf_counter()
    loop = PlainLoop(batch_size, model_name)
    for epoch in range(epochs):
        print(f"  plain epoch {epoch + 1}: {loop.epoch()}")
    return loop.step_times, time.perf_counter() - started


def brickwork_run(
    batch_size: int,
    epochs: int,
    folder: Path,
    model: str = "cnn",
    partner: PlainLoop | None = None,
) -> tuple[list[float], float]:
    """Step times and wall time of `brickwork.fit` with default logging."""
    timer = StepTimer(partner)

    class OnStepEnd:
        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            timer.step_ended()

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
    fit(None, overrides=overrides, run_dir=folder, callbacks=[OnStepEnd()])
    return timer.step_times, time.perf_counter() - started


def lightning_run(
    batch_size: int,
    epochs: int,
    folder: Path,
    model_name: str = "cnn",
    partner: PlainLoop | None = None,
) -> tuple[list[float], float] | None:
    """Lightning's Trainer on the same module, default logger and checkpointing."""
    try:
        import lightning as L
    except ImportError:
        return None
    started = time.perf_counter()
    timer = StepTimer(partner)

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
            timer.step_ended()

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
    return timer.step_times, time.perf_counter() - started


def run_loop(
    name: str,
    model: str,
    batch_size: int,
    epochs: int,
    folder: Path,
    partner: PlainLoop | None = None,
) -> tuple[list[float], float] | None:
    """One run of the loop `name`: step times and wall time (None: not installed)."""
    if THREADS[0] > 0:  # again before each run: Lightning may set its own count
        torch.set_num_threads(THREADS[0])
    if name == "plain":
        return plain_run(batch_size, epochs, model)
    if name == "brickwork":
        return brickwork_run(batch_size, epochs, folder, model, partner)
    return lightning_run(batch_size, epochs, folder / "lightning", model, partner)


class Rounds:
    """What the rounds of one case measured, per loop."""

    def __init__(self) -> None:
        self.walls: dict[str, list[float]] = {}
        # loop -> per round: (its median step, its plain partner's median step), in s
        self.pairs: dict[str, list[tuple[float, float]]] = {}


def measure(model: str, batch_size: int, epochs: int, rounds: int, scratch: Path) -> Rounds:
    """Each round: every loop alone (wall time), then each framework paired with plain steps."""
    measured = Rounds()
    for r in range(rounds):
        folder = scratch / f"{model}-{batch_size}-{r}"
        for name in LOOPS:
            outcome = run_loop(name, model, batch_size, epochs, folder / f"{name}-alone")
            if outcome is not None:
                measured.walls.setdefault(name, []).append(outcome[1])
        for name in LOOPS[1:]:
            partner = PlainLoop(batch_size, model)
            outcome = run_loop(name, model, batch_size, epochs, folder / f"{name}-paired", partner)
            if outcome is not None:
                pair = (statistics.median(outcome[0]), statistics.median(partner.step_times))
                measured.pairs.setdefault(name, []).append(pair)
    return measured


def summarize(model: str, batch_size: int, measured: Rounds) -> list[tuple[Any, ...]]:
    """One row per loop: median step, plain partner's median step, ms added per step
    (median over rounds of each round's paired difference, lowest and highest round),
    step ratio (median over rounds), wall time and its ratio to the plain loop's."""
    base_wall = statistics.median(measured.walls["plain"])
    partners = [p for pairs in measured.pairs.values() for _, p in pairs]
    plain_step = statistics.median(partners) * 1e3 if partners else float("nan")
    plain = (plain_step, plain_step, 0.0, 0.0, 0.0, 1.0, base_wall, 1.0)
    rows: list[tuple[Any, ...]] = [(model, batch_size, "plain", *plain)]
    for name, pairs in measured.pairs.items():
        added = [(step - partner) * 1e3 for step, partner in pairs]
        wall = statistics.median(measured.walls[name])
        rows.append(
            (
                model,
                batch_size,
                name,
                statistics.median(step for step, _ in pairs) * 1e3,
                statistics.median(partner for _, partner in pairs) * 1e3,
                statistics.median(added),
                min(added),
                max(added),
                statistics.median(step / partner for step, partner in pairs),
                wall,
                wall / base_wall,
            )
        )
    return rows


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
            measured = measure(model, batch_size, args.epochs, args.rounds, Path(scratch))
            rows.extend(summarize(model, batch_size, measured))
    print(
        f"\n{'model':<5} {'batch':>5} {'loop':<10} {'ms/step':>8} {'plain':>8} {'+ms/step':>8} "
        f"{'(rounds: low..high)':>19} {'step ratio':>10} {'wall s':>7} {'wall ratio':>10}"
    )
    for model, batch_size, name, step, plain, added, low, high, ratio, wall, wall_ratio in rows:
        spread = f"{low:+.3f}..{high:+.3f}"
        print(
            f"{model:<5} {batch_size:>5} {name:<10} {step:>8.3f} {plain:>8.3f} {added:>+8.3f} "
            f"{spread:>19} {ratio:>10.3f} {wall:>7.2f} {wall_ratio:>10.3f}"
        )


if __name__ == "__main__":
    main()
