"""The largest batch that fits, found with real steps, and the overrides that use it.

Each trial is a real `fit` of two optimizer steps at one batch size, with validation
and a checkpoint save, as the run will do them. A trial fits when nothing ran out of
memory (no recovery was needed) and its peak stays under the budget less a safety
margin. The search doubles from the configured batch until a trial does not fit (or
the training split is exhausted), then bisects between the last fit and the first
miss. The overrides printed keep the effective batch (micro-batch x accumulation), so
the optimisation does not change, only its memory.

Under several processes (`brickwork doctor --find-batch-size trainer.devices=2`, or
torchrun) each trial is a real DDP run on every rank, with its gradient all-reduce; the
budget is per process (per GPU), each rank measures its own peak, and the ranks agree
on each verdict (a size fits when it fits on every rank), so all of them search the
same sizes and report the same answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brickwork.config import Config
from brickwork.distributed import get_world_size, max_across_ranks, min_across_ranks
from brickwork.doctor.probe import run_probe
from brickwork.errors import BrickworkError
from brickwork.memory import release_memory

DEFAULT_MARGIN = 0.1
_PRECISION = 16  # bisect until the gap is under 1/16 of the batch: near enough, fewer trials


@dataclass
class BatchSizeSearch:
    """The search's result: the largest batch that fit and every trial behind it."""

    largest: int | None
    budget_bytes: int
    margin: float
    limit: int
    trials: list[dict[str, Any]] = field(default_factory=list)

    def overrides(self, config: Config) -> list[str]:
        """`data.batch_size=...` and the accumulation that keeps the effective batch."""
        if self.largest is None:
            return []
        effective = config.data.batch_size * config.trainer.accumulate_grad_batches
        if config.data.global_batch_size is not None:
            return [f"data.batch_size={min(self.largest, config.data.global_batch_size)}"]
        size = max(d for d in range(1, min(self.largest, effective) + 1) if effective % d == 0)
        return [
            f"data.batch_size={size}",
            f"trainer.accumulate_grad_batches={effective // size}",
        ]


def find_max_batch_size(
    config_source: Config | str | Path | None,
    overrides: Sequence[str],
    config: Config,
    device: torch.device,
    budget_bytes: int | None = None,
    margin: float = DEFAULT_MARGIN,
    train_size: int | None = None,
) -> BatchSizeSearch:
    """Double, then bisect, with real steps; see the module docstring.

    Example:
        >>> search = find_max_batch_size("configs/digits.yaml", [], cfg, cpu, 2 * 2**30)
        >>> search.overrides(cfg)
        ['data.batch_size=64', 'trainer.accumulate_grad_batches=1']
    """
    budget = budget_bytes if budget_bytes is not None else default_budget(device)
    limit = max(1, train_size or 2**20)
    search = BatchSizeSearch(None, budget, margin, limit)
    allowed = int(budget * (1 - margin))

    def fits(size: int) -> bool:
        trial = _trial(config_source, overrides, config, device, size)
        fits_here = trial["error"] is None and trial["peak_bytes"] <= allowed
        # Under several processes each rank measured its own share: a size fits when it
        # fits on every rank, and the peak is the largest (CPU collectives, gloo).
        trial["fits"] = bool(min_across_ranks(1.0 if fits_here else 0.0))
        trial["peak_bytes"] = max_across_ranks(int(trial["peak_bytes"] or 0)) or None
        trial["world_size"] = get_world_size()
        search.trials.append(trial)
        return bool(trial["fits"])

    low, high = 0, None  # the largest size that fit, the smallest that did not
    size = min(config.data.batch_size, limit)
    if fits(size):  # double up to the first miss, or to the whole training split
        low = size
        while low < limit:
            size = min(low * 2, limit)
            if not fits(size):
                high = size
                break
            low = size
    else:  # halve down to the first fit
        high = size
        while size > 1 and low == 0:
            size = max(1, size // 2)
            if fits(size):
                low = size
            else:
                high = size
        if low == 0:
            return search  # not even one sample fits
    while high is not None and high - low > max(1, low // _PRECISION):
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    search.largest = low or None
    return search


def _trial(
    config_source: Config | str | Path | None,
    overrides: Sequence[str],
    config: Config,
    device: torch.device,
    size: int,
) -> dict[str, Any]:
    extra = [
        f"data.batch_size={size}",
        "data.global_batch_size=null",
        "trainer.accumulate_grad_batches=1",
        "trainer.max_steps=2",
        "trainer.max_epochs=null",
    ]
    try:
        probe = run_probe(
            config_source,
            overrides,
            config,
            device,
            num_steps=None,
            measure_memory=True,
            extra=extra,
        )
    except (BrickworkError, torch.OutOfMemoryError) as error:
        return {"batch_size": size, "peak_bytes": None, "error": str(error).splitlines()[0]}
    finally:
        release_memory()  # the next trial starts from an empty cache, as a fresh run would
    recovered = probe.summary.get("out_of_memory", {})
    ran_out = recovered.get("num_recoveries", 0) or recovered.get("num_eval_recoveries", 0)
    return {
        "batch_size": size,
        "peak_bytes": probe.fit_peak_bytes or 0,
        "error": "out of memory (recovered by halving)" if ran_out else None,
    }


def default_budget(device: torch.device) -> int:
    """All of the GPU's memory, or the machine's available memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def parse_memory_size(text: str) -> int:
    """`2GiB`, `512MiB`, `1.5GB`, `1000000` (bytes) to bytes; a fix-it error otherwise."""
    units = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    units.update({"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 2**10})
    units.update({"m": 2**20, "g": 2**30})
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    number, unit = (match.group(1), match.group(2).lower()) if match else ("", "?")
    try:
        value = float(number) * units[unit]
    except (KeyError, ValueError):
        raise BrickworkError(
            f"--memory-budget {text}: not a size; use a size like 2GiB, 512MiB or 1.5GB"
        ) from None
    if value <= 0:
        raise BrickworkError(f"--memory-budget {text}: must be above zero, e.g. 2GiB")
    return int(value)
