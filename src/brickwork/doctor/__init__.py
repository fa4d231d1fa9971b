"""`brickwork doctor`: what would go wrong in training, found before training for real.

Five sections, each a module: `environment` (versions, GPUs, CPUs, workers, disk),
`preflight` (one batch through forward and backward), `speed` (input- or
compute-bound), `footprint` (memory per step, and leaks), and, on request,
`batch_size` (the largest batch that fits). Speed, memory and leaks come from real
steps of `fit` in a scratch folder (`probe`), with the config's own callbacks.

    report = brickwork.doctor.run_doctor("configs/my.yaml", ["data.batch_size=32"])
    print(report.format()); report.healthy
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from brickwork.config import Config
from brickwork.doctor.report import Check, DoctorReport
from brickwork.errors import BrickworkError

__all__ = ["Check", "DoctorReport", "run_doctor"]

PROBE_STEPS = 8


def run_doctor(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    find_batch_size: bool = False,
    memory_budget_bytes: int | None = None,
    margin: float = 0.1,
    num_steps: int = PROBE_STEPS,
) -> DoctorReport:
    """Run every check on a config (a YAML path, or None for the digits default).

    Example:
        >>> report = run_doctor(None, ["model.name=mlp"], find_batch_size=True)
        >>> report.find("batch_size").data["overrides"]
    """
    from brickwork.components import resolve_device
    from brickwork.distributed import distributed_session, is_main_process, rank_device
    from brickwork.doctor.environment import check_environment
    from brickwork.doctor.preflight import run_preflight
    from brickwork.rng import seed_everything
    from brickwork.run import resolve_training

    report = DoctorReport()
    try:
        resolved = resolve_training(config, overrides).config
        device = resolve_device(resolved.trainer.device)
    except BrickworkError as error:
        report.add(
            "preflight",
            "config",
            "fail",
            f"the config does not validate: {error}",
            "fix the key the message names",
        )
        return report
    report.add("preflight", "config", "ok", f"config {config or 'digits default'} validates")
    # Under torchrun every rank runs the same checks; the real steps are DDP steps.
    with distributed_session(resolved.trainer, device):
        device, report.main_process = rank_device(device), is_main_process()
        check_environment(report, resolved)
        seed_everything(resolved.seed)
        if not run_preflight(report, resolved, device):
            return report
        _run_probes(report, config, overrides, resolved, device, num_steps)
        if find_batch_size:
            _search_batch_size(
                report, config, overrides, resolved, device, memory_budget_bytes, margin
            )
    return report


def _run_probes(
    report: DoctorReport,
    config: str | Path | None,
    overrides: Sequence[str],
    resolved: Config,
    device: torch.device,
    num_steps: int,
) -> None:
    from brickwork.doctor.footprint import check_leaks, check_memory
    from brickwork.doctor.probe import run_probe
    from brickwork.doctor.speed import check_speed, time_batch_fetch

    try:
        fetch_times = time_batch_fetch(resolved, device, num_steps + 1)
        timed = run_probe(
            config,
            overrides,
            resolved,
            device,
            num_steps=num_steps,
            measure_memory=False,
            extra=["checkpoint.save_last=false"],
        )
        check_speed(report, resolved, fetch_times, timed)
        measured = run_probe(
            config,
            overrides,
            resolved,
            device,
            num_steps=num_steps,
            measure_memory=True,
            extra=["checkpoint.save_last=false"],
        )
    except BrickworkError as error:
        report.add(
            "speed",
            "probe",
            "fail",
            f"training steps failed: {error}",
            "run brickwork train with the same config to see the whole error",
        )
        return
    check_memory(report, measured)
    check_leaks(report, measured)


def _search_batch_size(
    report: DoctorReport,
    config: str | Path | None,
    overrides: Sequence[str],
    resolved: Config,
    device: torch.device,
    budget: int | None,
    margin: float,
) -> None:
    from brickwork.components import build_split_loader
    from brickwork.data import build_data
    from brickwork.distributed import get_world_size, min_across_ranks
    from brickwork.doctor.batch_size import find_max_batch_size

    loader = build_split_loader(resolved, build_data(resolved), "train", train=True)
    # This rank's share of the training split; the smallest share, so all ranks search
    # the same sizes (two shares of an odd split differ by one sample).
    train_size = int(min_across_ranks(len(loader.sampler)))  # type: ignore[arg-type]
    search = find_max_batch_size(config, overrides, resolved, device, budget, margin, train_size)
    suggested = search.overrides(resolved)
    budget_text = f"{_size(search.budget_bytes)} less {search.margin:.0%}"
    if search.largest is None:
        report.add(
            "batch size",
            "batch_size",
            "fail",
            f"no batch size fits in {budget_text}, not even 1",
            "a smaller model, trainer.precision=bf16, or a larger --memory-budget",
            trials=search.trials,
            overrides=[],
        )
        return
    capped = " (the whole training split)" if search.largest >= search.limit else ""
    ranks = get_world_size()
    per_process = f" per process, agreed by {ranks} processes" if ranks > 1 else ""
    report.add(
        "batch size",
        "batch_size",
        "ok",
        f"largest batch that fits in {budget_text}: {search.largest}{capped}{per_process}, in "
        f"{len(search.trials)} trial(s) of 2 real steps, validation and a checkpoint; "
        f"use: {' '.join(suggested)}",
        largest=search.largest,
        overrides=suggested,
        trials=search.trials,
        budget_bytes=search.budget_bytes,
        margin=search.margin,
        world_size=ranks,
    )


def _size(num_bytes: int) -> str:
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.2f} GiB"
    return f"{num_bytes / 2**20:.1f} MiB"
