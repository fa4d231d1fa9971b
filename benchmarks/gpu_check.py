"""One GPU, one table: a hand-written bf16 + channels_last loop against brickwork.

    python benchmarks/gpu_check.py            # under 5 minutes on one GPU; skips without CUDA
    python benchmarks/gpu_check.py --json gpu_check.json

Both sides train the same timm model (`resnet18`, 100 classes) on the same in-memory
random 64x64 images, batch 128, AdamW (fused), bf16 autocast, channels_last, pinned
memory and non-blocking copies, with `torch.compile` off and on. Each variant is timed
over the same window of optimizer steps after a warm-up (compilation included in the
warm-up), with a CUDA synchronize at both ends of the window and nowhere else.
brickwork runs with its default logging (one logged step in 50). The goal: brickwork
at least 0.99 of the raw loop's steps/s.

The host-sync column counts, with `torch.profiler`, the CUDA runtime calls that make
the CPU wait for the GPU (`cudaStreamSynchronize`, `cudaDeviceSynchronize`,
`cudaEventSynchronize`, synchronous `cudaMemcpy`) over 20 steps that do not log, per
step. brickwork's goal is 0, the raw loop's too.

On a machine without CUDA it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
NUM_CLASSES, IMAGE_SIZE, NUM_SAMPLES = 100, 64, 8192
WARMUP, WINDOW, PROFILED = 25, 100, 20  # brickwork profiles steps 126..145: none logs


def images() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(NUM_SAMPLES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=generator)
    return TensorDataset(inputs, labels)


def count_syncs(profile: Any) -> int:
    return sum(
        1
        for event in profile.events()
        if event.name in SYNC_CALLS or event.name == "cudaMemcpy"  # synchronous copies
    )


def raw_loop(compiled: bool, batch_size: int) -> tuple[float, float]:
    """Steps/s over the window, and host syncs per step, of the hand-written loop."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=NUM_CLASSES).cuda()
    model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = DataLoader(
        images(),
        batch_size=batch_size,
        shuffle=True,
        pin_memory=True,
        num_workers=4,
        drop_last=True,
        persistent_workers=True,
    )
    batches = iter(_forever(loader))

    def step() -> None:
        inputs, targets = next(batches)
        inputs = inputs.cuda(non_blocking=True).to(memory_format=torch.channels_last)
        targets = targets.cuda(non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(step_model(inputs), targets)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(WINDOW):
        step()
    torch.cuda.synchronize()
    steps_per_s = WINDOW / (time.perf_counter() - started)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(PROFILED):
            step()
        torch.cuda.synchronize()
    return steps_per_s, max(count_syncs(profile) - 1, 0) / PROFILED  # minus the final one


def _forever(loader: DataLoader[Any]) -> Any:
    while True:
        yield from loader


class Window:
    """Callback: times steps WARMUP..WARMUP+WINDOW, then profiles PROFILED quiet steps."""

    def __init__(self) -> None:
        self.started = 0.0
        self.steps_per_s = 0.0
        self.syncs_per_step = float("nan")
        self.profile: Any = None

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if state.step == WARMUP:
            torch.cuda.synchronize()
            self.started = time.perf_counter()
        elif state.step == WARMUP + WINDOW:
            torch.cuda.synchronize()
            self.steps_per_s = WINDOW / (time.perf_counter() - self.started)
            # Profile from here to a step before the next logging step (every 50).
            self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profile.__enter__()
        elif state.step == WARMUP + WINDOW + PROFILED and self.profile is not None:
            torch.cuda.synchronize()
            self.profile.__exit__(None, None, None)
            self.syncs_per_step = max(count_syncs(self.profile) - 1, 0) / PROFILED


def brickwork_loop(compiled: bool, batch_size: int, folder: Path) -> tuple[float, float]:
    import brickwork
    from brickwork.data import DataBundle
    from brickwork.registry import register

    @register("dataset", "gpu_check_images")
    def build_images() -> DataBundle:
        train = images()
        val = TensorDataset(train.tensors[0][:512], train.tensors[1][:512])
        return DataBundle(
            train=train, val=val, num_classes=NUM_CLASSES, input_shape=(3, IMAGE_SIZE, IMAGE_SIZE)
        )

    window = Window()
    # Default logging (every 50 steps) runs on steps 50 and 100 of the timed window.
    overrides = [
        "data.name=gpu_check_images",
        f"data.batch_size={batch_size}",
        "data.num_workers=4",
        "data.persistent_workers=true",
        "data.drop_last=true",
        "model={name: timm/resnet18}",
        "optimizer.lr=0.001",
        "trainer.precision=bf16",
        "trainer.channels_last=true",
        "trainer.device=cuda",
        f"trainer.compile={str(compiled).lower()}",
        f"trainer.max_steps={WARMUP + WINDOW + PROFILED}",
        "trainer.max_epochs=null",
        "trainer.log_every_n_steps=50",
        "trainer.test_after_fit=false",
        "loggers.progress_bar=false",
        "loggers.tensorboard.enabled=false",
    ]
    brickwork.fit(None, overrides=overrides, run_dir=folder, callbacks=[window])
    return window.steps_per_s, window.syncs_per_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is False)")
        return 0
    torch.backends.cudnn.benchmark = True
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for compiled in (False, True):
            raw = raw_loop(compiled, args.batch_size)
            ours = brickwork_loop(compiled, args.batch_size, Path(scratch) / f"bw-{compiled}")
            rows.append({"compile": compiled, "raw": raw, "brickwork": ours})
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'compile':<8} {'loop':<10} {'steps/s':>9} {'vs raw':>7} {'host syncs/step':>16}")
    for row in rows:
        base = row["raw"][0]
        for name in ("raw", "brickwork"):
            steps, syncs = row[name]
            print(
                f"{str(row['compile']).lower():<8} {name:<10} {steps:>9.1f} "
                f"{steps / base:>7.3f} {syncs:>16.2f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
