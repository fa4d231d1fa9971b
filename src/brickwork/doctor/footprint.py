"""Where a step's memory goes, and whether it grows from step to step (a leak).

Parameters, gradients and optimizer state are counted from the tensors' sizes; the
step's peak above them (activations and temporaries) comes from the probe's meter
(CUDA statistics on a GPU, the tensor memory profile on the CPU). A leak is memory
alive after each step that keeps growing once the first steps (which create the
optimizer state) are past; callbacks that keep tensors with their autograd graph
are named, since that is the usual cause.
"""

from __future__ import annotations

import itertools
import statistics

from brickwork.doctor.probe import ProbeResult
from brickwork.doctor.report import DoctorReport

WARMUP_STEPS = 2  # step 1 creates the optimizer state; step 2 the first reused buffers
LEAK_MIN_BYTES_PER_STEP = 1024


def _mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.2f} MiB"


def check_memory(report: DoctorReport, probe: ProbeResult) -> None:
    """Add the memory breakdown of one step."""
    static = probe.parameter_bytes + probe.gradient_bytes + probe.optimizer_bytes
    report.add(
        "memory",
        "static",
        "info",
        f"parameters {_mib(probe.parameter_bytes)}, gradients {_mib(probe.gradient_bytes)}, "
        f"optimizer state {_mib(probe.optimizer_bytes)}, buffers {_mib(probe.buffer_bytes)}",
        parameter_bytes=probe.parameter_bytes,
        gradient_bytes=probe.gradient_bytes,
        optimizer_bytes=probe.optimizer_bytes,
        buffer_bytes=probe.buffer_bytes,
    )
    measured = [s for s in probe.steps[WARMUP_STEPS - 1 :] if s.peak_bytes is not None]
    previous = {s.step: s.live_bytes for s in probe.steps}
    # The step's peak above what was alive before it; its gradients were freed at its
    # start (zero_grad(set_to_none=True)) and are re-created in its backward.
    extras = [
        s.peak_bytes - previous[s.step - 1] + probe.gradient_bytes  # type: ignore[operator]
        for s in measured
        if previous.get(s.step - 1) is not None
    ]
    if not extras:
        return
    activation = max(0, max(extras))
    batch = probe.micro_batch_size or 1
    report.add(
        "memory",
        "activations",
        "info",
        f"activations and temporaries: {_mib(activation)} for a micro-batch of {batch} "
        f"(about {activation / batch / 1024:.1f} KiB per sample); weights, gradients and "
        f"optimizer state: {_mib(static)}",
        activation_bytes=activation,
        activation_bytes_per_sample=activation / batch,
        static_bytes=static,
        peak_bytes=probe.fit_peak_bytes,
    )


def check_leaks(report: DoctorReport, probe: ProbeResult) -> None:
    """Add the leak verdict: growth per step after warm-up, and who holds the tensors."""
    live = [s.live_bytes for s in probe.steps[WARMUP_STEPS:] if s.live_bytes is not None]
    growth = [b - a for a, b in itertools.pairwise(live)]
    if not growth:
        report.add("leaks", "growth", "info", "too few steps to tell whether memory grows")
        return
    per_step = statistics.median(growth)
    rising = sum(g > 0 for g in growth) >= 0.75 * len(growth)
    leaking = rising and per_step >= LEAK_MIN_BYTES_PER_STEP
    holders = probe.holders
    cause = f"; held by {', '.join(holders)}" if holders else ""
    fix = (
        "keep numbers with loss.item() (or tensors with .detach()) instead of tensors "
        "with their graph; evaluate under torch.no_grad(); del what is no longer needed"
    )
    report.add(
        "leaks",
        "growth",
        "fail" if leaking else ("warn" if holders else "ok"),
        (
            f"memory grows by {per_step / 1024:.1f} KiB per step over {len(growth)} steps"
            if leaking
            else f"memory after each step is steady ({per_step / 1024:+.1f} KiB per step)"
        )
        + cause,
        fix if (leaking or holders) else None,
        growth_bytes_per_step=per_step,
        live_bytes=live,
        holders=holders,
    )
