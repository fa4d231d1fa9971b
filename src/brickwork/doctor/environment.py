"""The machine a run would use: Python, torch, CUDA and cuDNN, GPUs, CPUs, workers, disk.

GPU memory and utilisation come from NVIDIA's management library (`nvidia-ml-py`)
when it is installed and a driver answers, else from torch; without a GPU the report
says so in one line, since a silent CPU fallback is the most common slow run.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from brickwork.config import Config
from brickwork.doctor.report import DoctorReport

_GIB = 2**30
_MIN_FREE_DISK_GIB = 1.0


def check_environment(report: DoctorReport, config: Config) -> None:
    """Add the environment checks to `report`."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    report.add(
        "environment",
        "versions",
        "info",
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda or 'none'}, cuDNN {cudnn or 'none'}",
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=cudnn,
    )
    _check_gpus(report, config)
    num_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = config.data.num_workers
    too_many = num_cpus is not None and workers > num_cpus
    report.add(
        "environment",
        "cpus",
        "warn" if too_many else "info",
        f"{num_cpus} CPU core(s) available, DataLoader workers in use: {workers}",
        f"data.num_workers={max(1, (num_cpus or 2) - 1)}: more workers than cores only "
        "adds switching"
        if too_many
        else None,
        num_cpus=num_cpus,
        num_workers=workers,
    )
    _check_disk(report, Path("runs") / config.name)


def _check_gpus(report: DoctorReport, config: Config) -> None:
    gpus = _nvml_gpus() or _torch_gpus()
    wants_gpu = config.trainer.device.startswith("cuda")
    if not gpus:
        report.add(
            "environment",
            "gpus",
            "fail" if wants_gpu else "info",
            "no GPU: training runs on the CPU"
            + (f" but trainer.device = '{config.trainer.device}'" if wants_gpu else ""),
            "install a CUDA build of torch and an NVIDIA driver, or set trainer.device=auto",
            gpus=[],
        )
        return
    for gpu in gpus:
        used = f"{gpu['used_bytes'] / _GIB:.1f}" if gpu["used_bytes"] is not None else "?"
        util = f", {gpu['utilization_pct']}% busy" if gpu["utilization_pct"] is not None else ""
        report.add(
            "environment",
            f"gpu{gpu['index']}",
            "info",
            f"GPU {gpu['index']} {gpu['name']}: {gpu['total_bytes'] / _GIB:.1f} GiB, "
            f"{used} GiB used, {gpu['free_bytes'] / _GIB:.1f} GiB free{util}",
            **gpu,
        )


def _nvml_gpus() -> list[dict[str, Any]]:
    """GPUs as the driver sees them (memory used by every process, utilisation)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "total_bytes": int(memory.total),
                    "used_bytes": int(memory.used),
                    "free_bytes": int(memory.free),
                    "utilization_pct": int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                }
            )
        return found
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


def _torch_gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        found.append(
            {
                "index": index,
                "name": torch.cuda.get_device_name(index),
                "total_bytes": int(total),
                "used_bytes": int(total - free),
                "free_bytes": int(free),
                "utilization_pct": None,
            }
        )
    return found


def _check_disk(report: DoctorReport, run_root: Path) -> None:
    existing = run_root.resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    low = free < _MIN_FREE_DISK_GIB * _GIB
    report.add(
        "environment",
        "disk",
        "warn" if low else "info",
        f"{free / _GIB:.1f} GiB free where the run folder would go ({run_root}/)",
        "free disk space: checkpoints need room for two copies of the model and optimizer"
        if low
        else None,
        free_bytes=free,
        path=str(existing),
    )
