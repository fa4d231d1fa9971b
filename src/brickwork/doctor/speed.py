"""Is training waiting for data or for compute? Batch fetch time against step time.

The loader is timed alone (what the input pipeline can deliver), the step inside a
real `fit` (fetch and compute together). When fetching takes more than half a step,
the run is input-bound and the advice is ranked by what usually helps most.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from brickwork.components import build_split_loader
from brickwork.config import Config
from brickwork.data import build_data
from brickwork.doctor.probe import ProbeResult, median_seconds
from brickwork.doctor.report import DoctorReport

_DECODED_DATASETS = ("image_folder", "image_csv")
_LARGE_IMAGE_PIXELS = 224 * 224
INPUT_BOUND_FRACTION = 0.5


def time_batch_fetch(config: Config, device: torch.device, num_batches: int) -> list[float]:
    """Seconds per batch of the training loader alone (the first includes worker start-up)."""
    pin_memory = (
        config.data.pin_memory if config.data.pin_memory is not None else device.type == "cuda"
    )
    loader = build_split_loader(
        config, build_data(config), "train", train=True, pin_memory=pin_memory
    )
    times, iterator = [], iter(loader)
    for _ in range(num_batches):
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        times.append(time.perf_counter() - started)
        del batch
    return times


def check_speed(
    report: DoctorReport, config: Config, fetch_times: list[float], probe: ProbeResult
) -> None:
    """Add the verdict (input- or compute-bound) and ranked advice."""
    fetch = statistics.median(fetch_times[1:] or fetch_times) if fetch_times else 0.0
    micro_steps = config.trainer.accumulate_grad_batches
    step = median_seconds(probe.steps) / micro_steps  # per loader batch
    fraction = fetch / step if step > 0 else 0.0
    input_bound = fraction > INPUT_BOUND_FRACTION
    batch = report.find("batch")
    shape = batch.data.get("input_shape") if batch is not None else None
    advice = rank_speed_advice(config, shape) if input_bound else []
    report.add(
        "speed",
        "verdict",
        "warn" if input_bound else "ok",
        f"fetching a batch takes {fetch * 1e3:.2f} ms of a {step * 1e3:.2f} ms training step "
        f"({fraction:.0%}): {'input-bound' if input_bound else 'compute-bound'}",
        "; ".join(f"{i}. {a}" for i, a in enumerate(advice, 1)) or None,
        fetch_s=fetch,
        step_s=step,
        fetch_fraction=fraction,
        verdict="input-bound" if input_bound else "compute-bound",
        advice=advice,
        first_fetch_s=fetch_times[0] if fetch_times else None,
    )
    if not input_bound:
        report.add(
            "speed",
            "compute",
            "info",
            "the model sets the pace: on a GPU, trainer.precision=bf16 and "
            "trainer.channels_last=true are the usual next steps",
        )


def rank_speed_advice(config: Config, shape: list[int] | None) -> list[str]:
    """What to change for an input-bound run, most likely to help first."""
    data, advice = config.data, []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if data.num_workers == 0 and (cpus or 1) > 1:
        advice.append(
            f"data.num_workers={min(8, (cpus or 2) - 1)}: load batches in parallel with training"
        )
    if config.trainer.device != "cpu" and torch.cuda.is_available() and data.pin_memory is False:
        advice.append("data.pin_memory=true: faster, asynchronous copies to the GPU")
    if data.num_workers > 0 and not data.persistent_workers:
        advice.append("data.persistent_workers=true: workers are not restarted every epoch")
    if data.name in _DECODED_DATASETS:
        advice.append(
            "decoding: images are decoded on every read; store them resized to the training "
            "size (or as tensors) once"
        )
    if shape and len(shape) >= 2 and shape[-1] * shape[-2] > _LARGE_IMAGE_PIXELS:
        advice.append(f"image size {shape[-2]}x{shape[-1]}: a smaller Resize costs less")
    if data.num_workers > 0 and data.prefetch_factor is None:
        advice.append("data.prefetch_factor=4: more batches ready ahead of the step")
    return advice
