"""One GPU, one table: brickwork's speed against a hand-written loop, and its troubleshooting.

    PYTHONPATH=src python benchmarks/gpu_check.py          # one GPU, unattended, under 5 minutes
    PYTHONPATH=src python benchmarks/gpu_check.py --json gpu_check.json

On a machine without CUDA it prints one line saying so and exits 0. Otherwise it runs
every check below, even after one fails, prints one table (check, result, goal, ok,
seconds), and exits 1 if a goal was missed.

Speed. A hand-written bf16 + channels_last loop against brickwork:

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

Troubleshooting (`brickwork doctor`, out-of-memory recovery):

1. doctor on `timm/resnet18` (random 64x64 images): healthy, within a minute;
2. the batch-size search under an 8 GiB budget, then a real epoch at the batch it found:
   no out-of-memory error and a CUDA peak under the budget (the finder's promise);
3. a real out-of-memory error: an MLP whose hidden layer needs about twice the card's
   memory at the configured batch. The run must complete, having halved its
   micro-batch at least once (same samples, same effective batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

import brickwork
from brickwork.data import DataBundle
from brickwork.registry import register

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


@register("dataset", "gpu_check_images")
def build_images() -> DataBundle:
    """The speed check's images, for brickwork."""
    train = images()
    val = TensorDataset(train.tensors[0][:512], train.tensors[1][:512])
    return DataBundle(
        train=train, val=val, num_classes=NUM_CLASSES, input_shape=(3, IMAGE_SIZE, IMAGE_SIZE)
    )


def brickwork_loop(compiled: bool, batch_size: int, folder: Path) -> tuple[float, float]:
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


@register("dataset", "gpu_check_doctor_images")
def build_doctor_images(seed: int = 0, num_samples: int = 4096, image_size: int = 64) -> DataBundle:
    """The troubleshooting checks' images: 10 classes, an eighth held out."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    val = num_samples // 8
    return DataBundle(
        TensorDataset(inputs[val:], labels[val:]),
        TensorDataset(inputs[:val], labels[:val]),
        num_classes=10,
        input_shape=(3, image_size, image_size),
        train_targets=labels[val:],
    )


@register("dataset", "gpu_check_vectors")
def build_vectors(seed: int = 0, num_samples: int = 262144, width: int = 64) -> DataBundle:
    """Vectors for the out-of-memory check: many samples, so a batch can outgrow the card."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, width, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    return DataBundle(
        TensorDataset(inputs, labels),
        TensorDataset(inputs[:1024], labels[:1024]),
        num_classes=10,
        input_shape=(width,),
        train_targets=labels,
    )


QUIET = ["loggers.progress_bar=false", "loggers.tensorboard.enabled=false"]
TIMM = [
    "data.name=gpu_check_doctor_images",
    "model.name=timm/resnet18",
    "metrics=[accuracy]",
    "scheduler=null",
    "early_stopping=null",
    "trainer.precision=bf16",
    *QUIET,
]
BUDGET_BYTES = 8 * 2**30
GiB = 2**30


@dataclass
class Row:
    """One line of the table; `ok` is None for a figure without a goal."""

    check: str
    result: str
    goal: str = ""
    ok: bool | None = None
    seconds: float = 0.0


def check_speed(batch_size: int, scratch: Path) -> list[Row]:
    """Raw loop and brickwork, compile off and on: steps/s and host syncs per step."""
    rows = []
    for compiled in (False, True):
        label = f"compile {'on' if compiled else 'off'}"
        started = time.perf_counter()
        raw_steps, raw_syncs = raw_loop(compiled, batch_size)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        ours, syncs = brickwork_loop(compiled, batch_size, scratch / f"bw-{compiled}")
        ours_s = time.perf_counter() - started
        ratio = ours / raw_steps
        rows += [
            Row(f"raw loop, {label}", f"{raw_steps:.1f} steps/s", seconds=raw_s),
            Row(f"raw loop host syncs/step, {label}", f"{raw_syncs:.2f}", "0", raw_syncs == 0),
            Row(
                f"brickwork, {label}",
                f"{ours:.1f} steps/s, {ratio:.3f} of raw",
                ">= 0.99 of raw",
                ratio >= 0.99,
                ours_s,
            ),
            Row(f"brickwork host syncs/step, {label}", f"{syncs:.2f}", "0", syncs == 0),
        ]
    return rows


def check_doctor() -> Row:
    """`brickwork doctor` on a timm model: healthy, within a minute."""
    from brickwork.doctor import run_doctor

    started = time.perf_counter()
    report = run_doctor(None, TIMM)
    seconds = time.perf_counter() - started
    print(report.format())
    verdict = "healthy" if report.healthy else "unhealthy (see the report above)"
    ok = report.healthy and seconds <= 60
    return Row("doctor on timm/resnet18", verdict, "healthy, <= 60 s", ok, seconds)


def check_batch_size_search(scratch: Path) -> Row:
    """The search under a budget, then an epoch at the found batch: no OOM, peak in budget."""
    from brickwork.doctor import run_doctor

    started = time.perf_counter()
    report = run_doctor(None, TIMM, find_batch_size=True, memory_budget_bytes=BUDGET_BYTES)
    found = report.find("batch_size")
    if found is None or found.status != "ok":
        detail = found.message if found is not None else "no batch_size check in the report"
        return Row("batch-size search, 8 GiB", f"failed: {detail}", "a batch", False)
    largest = int(found.data["largest"])
    torch.cuda.reset_peak_memory_stats()
    summary = brickwork.fit(
        None,
        overrides=[*TIMM, f"data.batch_size={largest}", "trainer.max_epochs=1"],
        run_dir=scratch / "found-batch",
    )
    peak = torch.cuda.max_memory_allocated()
    recoveries = summary["out_of_memory"]["num_recoveries"]
    return Row(
        "batch-size search, 8 GiB, then an epoch",
        f"batch {largest}: peak {peak / GiB:.2f} GiB, {recoveries} OOM",
        "peak <= 8 GiB, 0 OOM",
        recoveries == 0 and peak <= BUDGET_BYTES,
        time.perf_counter() - started,
    )


def check_out_of_memory_recovery(scratch: Path) -> Row:
    """A batch about twice the card: the run completes on a halved micro-batch."""
    started = time.perf_counter()
    total = torch.cuda.get_device_properties(0).total_memory
    hidden = 65536
    per_sample = hidden * 4 * 4  # the hidden activations, their ReLU, and their gradients
    batch = min(262144, int(2 * total / per_sample))
    summary = brickwork.fit(
        None,
        overrides=[
            "data.name=gpu_check_vectors",
            f"data.batch_size={batch}",
            "data.eval_batch_size=1024",
            f"model={{name: mlp, hidden_sizes: [{hidden}], dropout: 0}}",
            "metrics=[accuracy]",
            "scheduler=null",
            "early_stopping=null",
            "trainer.max_steps=3",
            "trainer.max_epochs=null",
            *QUIET,
        ],
        run_dir=scratch / "out-of-memory",
    )
    oom = summary["out_of_memory"]
    return Row(
        f"OOM recovery, batch {batch} (~2x the card)",
        f"{summary['status']}, {oom['num_recoveries']} recoveries, "
        f"micro-batch {oom['micro_batch_size']}",
        "completed, >= 1 recovery",
        summary["status"] == "completed" and oom["num_recoveries"] >= 1,
        time.perf_counter() - started,
    )


def guarded(name: str, check: Callable[[], list[Row]]) -> list[Row]:
    """Run one check; an error becomes a failed row, so the other checks still run."""
    started = time.perf_counter()
    try:
        return check()
    except Exception as error:  # a broken promise, reported in the table
        first = str(error).splitlines()[0] if str(error) else ""
        message = f"error: {type(error).__name__}: {first[:120]}"
        return [Row(name, message, "no error", False, time.perf_counter() - started)]


def print_table(rows: list[Row]) -> None:
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    width = max(len(row.check) for row in rows)
    result_width = max(len(row.result) for row in rows)
    print(f"{'check':<{width}}  {'result':<{result_width}}  {'goal':<24} {'ok':<3} {'s':>6}")
    for row in rows:
        ok = "-" if row.ok is None else ("yes" if row.ok else "NO")
        print(
            f"{row.check:<{width}}  {row.result:<{result_width}}  {row.goal:<24} {ok:<3} "
            f"{row.seconds:>6.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is False)")
        return 0
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        rows = [
            *guarded("speed", lambda: check_speed(args.batch_size, scratch)),
            *guarded("doctor on timm/resnet18", lambda: [check_doctor()]),
            *guarded("batch-size search", lambda: [check_batch_size_search(scratch)]),
            *guarded("OOM recovery", lambda: [check_out_of_memory_recovery(scratch)]),
        ]
    elapsed = time.perf_counter() - started
    rows.append(Row("whole check", f"{elapsed:.0f} s", "<= 300 s", elapsed <= 300, elapsed))
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2) + "\n")
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
