"""Real training steps under measurement: time per step, live and peak tensor memory.

The doctor does not simulate training: it runs `fit` itself for a few steps in a
scratch folder, with the config's own callbacks, and watches through a callback.
On a GPU memory comes from CUDA's allocator statistics; on the CPU, which keeps
none, `TensorMemoryMeter` is a memory profile built from the tensors' sizes: it sees
every tensor an operation creates (forward, backward and optimizer alike) and
notices when its storage is freed.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brickwork.config import Config
from brickwork.memory_profile import CudaMemoryMeter, TensorMemoryMeter
from brickwork.stop import StopKind

# Settings that keep a probe to its few steps and out of the user's runs/ and loggers.
PROBE_OVERRIDES = (
    "trainer.test_after_fit=false",
    "trainer.devices=1",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
    "early_stopping=null",
    "checkpoint.every_n_steps=null",
    "checkpoint.every_n_minutes=null",
)


@dataclass
class StepRecord:
    """One optimizer step: wall time, memory alive after it, and its peak."""

    step: int
    seconds: float
    live_bytes: int | None
    peak_bytes: int | None


@dataclass
class ProbeResult:
    """What the probe saw; `holders` are callback attributes that keep autograd graphs."""

    steps: list[StepRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    parameter_bytes: int = 0
    gradient_bytes: int = 0
    optimizer_bytes: int = 0
    buffer_bytes: int = 0
    fit_peak_bytes: int | None = None
    holders: list[str] = field(default_factory=list)
    micro_batch_size: int = 0


class StepProbe:
    """A callback that times each step, reads the meter, and stops after `num_steps`."""

    def __init__(self, num_steps: int | None, meter: Any, device: torch.device) -> None:
        self.num_steps, self.meter, self.device = num_steps, meter, device
        self.result = ProbeResult()
        self._last = 0.0

    def on_fit_start(self, state: Any) -> None:
        self._sync()
        self._last = time.perf_counter()

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        self._sync()  # a device sync: the step's time must include its GPU work
        now = time.perf_counter()
        live = self.meter.current() if self.meter is not None else None
        peak = self.meter.peak if self.meter is not None else None
        self.result.steps.append(StepRecord(state.step, now - self._last, live, peak))
        if self.meter is not None:
            self.meter.reset_peak()
        if self.num_steps is not None and state.step >= self.num_steps:
            state.request_stop(StopKind.USER, "brickwork doctor: probe done")
        self._last = time.perf_counter()

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        result, model = self.result, state.model
        result.parameter_bytes = sum(_nbytes(p) for p in model.parameters())
        result.gradient_bytes = sum(_nbytes(p) for p in model.parameters() if p.requires_grad)
        result.buffer_bytes = sum(_nbytes(b) for b in model.buffers())
        result.optimizer_bytes = sum(
            _nbytes(value)
            for entry in state.optimizer.state.values()
            for value in entry.values()
            if isinstance(value, torch.Tensor)
        )
        result.holders = find_graph_holders(state.callbacks)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_probe(
    config_source: Config | str | Path | None,
    overrides: Sequence[str],
    config: Config,
    device: torch.device,
    *,
    num_steps: int | None,
    measure_memory: bool,
    extra: Sequence[str] = (),
) -> ProbeResult:
    """`fit` for `num_steps` steps (None: as `extra` says) in a scratch folder, measured."""
    meter: Any = None
    if measure_memory:
        meter = CudaMemoryMeter(device) if device.type == "cuda" else TensorMemoryMeter()
    probe = StepProbe(num_steps, meter, device)
    from brickwork.loop import fit

    with (
        tempfile.TemporaryDirectory(prefix="brickwork-doctor-") as scratch,
        _metered(meter),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        if isinstance(meter, CudaMemoryMeter):
            meter.reset_peak()
        summary = fit(
            config_source,
            overrides=[*overrides, *PROBE_OVERRIDES, *extra],
            run_dir=Path(scratch) / "run",
            callbacks=[probe],
        )
        # The probe resets the peak at each step end: the run's peak is the largest seen.
        peaks = [s.peak_bytes for s in probe.result.steps if s.peak_bytes is not None]
        fit_peak = max([*peaks, meter.peak]) if meter is not None else None
    probe.result.summary = summary
    probe.result.fit_peak_bytes = fit_peak
    probe.result.micro_batch_size = int(
        summary.get("out_of_memory", {}).get("micro_batch_size", config.data.batch_size)
    )
    return probe.result


@contextlib.contextmanager
def _metered(meter: Any) -> Iterator[None]:
    if isinstance(meter, TensorMemoryMeter):
        with meter:
            yield
    else:
        yield


def find_graph_holders(callbacks: Sequence[Any]) -> list[str]:
    """Callback attributes that hold tensors with an autograd graph (`Class.attr: N tensors`).

    A tensor kept with its `grad_fn` keeps the whole graph behind it, and with it the
    activations saved for a backward that never comes.
    """
    found = []
    for callback in callbacks:
        for attribute, value in vars(callback).items() if hasattr(callback, "__dict__") else ():
            items = list(value.values()) if isinstance(value, dict) else value
            if isinstance(items, torch.Tensor):
                items = [items]
            if not isinstance(items, list | tuple):
                continue
            kept = [t for t in items if isinstance(t, torch.Tensor) and t.grad_fn is not None]
            if kept:
                found.append(
                    f"{type(callback).__name__}.{attribute}: {len(kept)} tensor(s) with "
                    f"grad_fn={type(kept[0].grad_fn).__name__}"
                )
    return found


def median_seconds(steps: Sequence[StepRecord], skip: int = 1) -> float:
    """The median step time after the first `skip` (warm-up) steps."""
    times = [s.seconds for s in steps[skip:]] or [s.seconds for s in steps]
    return statistics.median(times) if times else float("nan")


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
