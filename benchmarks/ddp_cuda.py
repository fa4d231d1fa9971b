"""One GPU: `brickwork.fit` (bf16 autocast + channels_last) against a plain PyTorch loop.

Run it on a machine with one CUDA GPU:

    PYTHONPATH=src python benchmarks/ddp_cuda.py               # prints the ratio, goal >= 0.98
    PYTHONPATH=src python benchmarks/ddp_cuda.py --json out.json

Both sides train the same torchvision ResNet on the same in-memory random images
with the same DataLoader settings (pinned memory, workers), AdamW, bf16 autocast and
channels_last, and are timed over the same window of optimizer steps after a
warm-up, with a CUDA synchronize at both ends of the window (and nowhere else). The
ratio brickwork / plain is the loop's overhead: meters kept on the device, hooks,
the step bookkeeping. Runs alternate (plain, brickwork, plain, brickwork, ...) and
the best of each side is kept, so clock boosts and caches favour neither.

`--device cpu` with tiny sizes is a smoke test that the script runs; its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import brickwork
from brickwork.data import DataBundle
from brickwork.registry import register


@register("dataset", "bench_images")
def build_bench_images(
    seed: int = 0, num_samples: int = 8192, image_size: int = 64, num_classes: int = 100
) -> DataBundle:
    """Random images and labels held in memory: the loop, not the disk, is measured."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_samples, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, num_classes, (num_samples,), generator=generator)
    train = TensorDataset(images, labels)
    val = TensorDataset(images[:256], labels[:256])
    return DataBundle(
        train=train, val=val, num_classes=num_classes, input_shape=(3, image_size, image_size)
    )


@register("model", "bench_resnet")
def build_bench_resnet(num_classes: int, arch: str = "resnet18") -> nn.Module:
    import torchvision

    return getattr(torchvision.models, arch)(num_classes=num_classes)


class WindowTimer:
    """Callback: seconds from step `start` to step `stop`, synchronizing only there."""

    def __init__(self, start: int, stop: int, device: torch.device) -> None:
        self.start, self.stop, self.device = start, stop, device
        self.started = 0.0
        self.seconds = float("nan")

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if state.step in (self.start, self.stop):
            _synchronize(self.device)
            if state.step == self.start:
                self.started = time.perf_counter()
            else:
                self.seconds = time.perf_counter() - self.started


def time_brickwork(args: argparse.Namespace, scratch: Path, run: int) -> float:
    """Steps per second of `brickwork.fit` over the timed window."""
    data = (
        f"{{name: bench_images, num_samples: {args.num_samples}, image_size: {args.image_size}, "
        f"num_classes: {args.num_classes}, batch_size: {args.batch_size}, "
        f"num_workers: {args.num_workers}, persistent_workers: {args.num_workers > 0}, "
        f"pin_memory: {args.device == 'cuda'}, shuffle: true}}"
    )
    overrides = [
        f"data={data}",
        f"model={{name: bench_resnet, arch: {args.arch}}}",
        "optimizer={name: adamw, lr: 0.001, weight_decay: 0.01}",
        "scheduler=null",
        "loss={name: cross_entropy}",
        "metrics=[]",
        "checkpoint={monitor: val/loss, mode: min}",
        "early_stopping=null",
        f"trainer.device={args.device}",
        "trainer.precision=bf16",
        "trainer.channels_last=true",
        "trainer.max_epochs=null",
        f"trainer.max_steps={args.warmup_steps + args.steps}",
        "trainer.log_every_n_steps=1000000",  # no logging sync inside the window
        "trainer.test_after_fit=false",
        "loggers.progress_bar=false",
        "loggers.tensorboard.enabled=false",
        f"seed={run}",
    ]
    device = torch.device(args.device)
    timer = WindowTimer(args.warmup_steps, args.warmup_steps + args.steps, device)
    brickwork.fit(None, overrides=overrides, run_dir=scratch / f"run-{run}", callbacks=[timer])
    return args.steps / timer.seconds


def time_plain(args: argparse.Namespace, run: int) -> float:
    """Steps per second of the textbook loop on the same model, data and settings."""
    device = torch.device(args.device)
    torch.manual_seed(run)
    bundle = build_bench_images(run, args.num_samples, args.image_size, args.num_classes)
    loader = DataLoader(
        bundle.train,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
        pin_memory=args.device == "cuda",
    )
    model = build_bench_resnet(args.num_classes, args.arch).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    step, started, stop = 0, 0.0, args.warmup_steps + args.steps
    while step < stop:
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True, memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == args.warmup_steps:
                _synchronize(device)
                started = time.perf_counter()
            if step == stop:
                _synchronize(device)
                break
    return args.steps / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet18", help="a torchvision.models name")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=16384)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--warmup-steps", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40, help="timed steps (one epoch at most)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; this benchmark needs one GPU (or --device cpu smoke)")
    if (args.warmup_steps + args.steps) * args.batch_size > args.num_samples:
        parser.error("warm-up plus timed steps must fit in one epoch: raise --num-samples")
    torch.backends.cudnn.benchmark = True  # both sides: the fastest conv algorithms

    plain, ours = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.rounds):
            plain.append(time_plain(args, run))
            ours.append(time_brickwork(args, Path(scratch), run))
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "arch": args.arch,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "plain_steps_per_s": max(plain),
        "brickwork_steps_per_s": max(ours),
        "ratio": max(ours) / max(plain),
        "all_runs": {"plain": plain, "brickwork": ours},
    }
    print(json.dumps(result, indent=2))
    verdict = "meets" if result["ratio"] >= 0.98 else "MISSES"
    print(f"brickwork / plain = {result['ratio']:.3f} ({verdict} the goal of >= 0.98)")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
