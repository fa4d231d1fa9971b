"""GPU checks of issue 12: `brickwork doctor` on a timm model, `--find-batch-size`, and a
real out-of-memory recovery with a batch deliberately too large for the card.

Run it on a machine with one CUDA GPU (without one it prints a skip line and exits 0):

    PYTHONPATH=src python benchmarks/gpu_check_doctor.py --json gpu_doctor.json

1. doctor on `timm/resnet18` (random 64x64 images): healthy, and the time it took.
2. the batch-size search under an 8 GiB budget, then a real run at the batch it found:
   no out-of-memory error and a CUDA peak under the budget (the finder's promise).
3. a real out-of-memory error: an MLP whose hidden layer needs about twice the card's
   memory at the configured batch. The run must finish, halve its micro-batch at
   least once, and keep the same effective batch.

Meant to be merged into `benchmarks/gpu_check.py` as `check_doctor()`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

import brickwork
from brickwork.data import DataBundle
from brickwork.registry import register


@register("dataset", "gpu_check_images")
def build_images(seed: int = 0, num_samples: int = 4096, image_size: int = 64) -> DataBundle:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_samples, 3, image_size, image_size, generator=generator)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    val = num_samples // 8
    return DataBundle(
        TensorDataset(images[val:], labels[val:]),
        TensorDataset(images[:val], labels[:val]),
        num_classes=10,
        input_shape=(3, image_size, image_size),
        train_targets=labels[val:],
    )


@register("dataset", "gpu_check_vectors")
def build_vectors(seed: int = 0, num_samples: int = 262144, width: int = 64) -> DataBundle:
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
TIMM = ["data.name=gpu_check_images", "model.name=timm/resnet18", "metrics=[accuracy]", *QUIET]
TIMM += ["scheduler=null", "early_stopping=null", "trainer.precision=bf16"]


def check_doctor() -> dict[str, Any]:
    """The three checks; raises AssertionError on a broken promise."""
    from brickwork.doctor import run_doctor

    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0)}
    started = time.perf_counter()
    report = run_doctor(None, TIMM)
    results["doctor_s"] = round(time.perf_counter() - started, 1)
    results["doctor_healthy"] = report.healthy
    print(report.format())
    assert report.healthy, "doctor found a problem in a healthy timm config"

    budget = 8 * 2**30
    started = time.perf_counter()
    report = run_doctor(None, TIMM, find_batch_size=True, memory_budget_bytes=budget)
    found = report.find("batch_size")
    assert found is not None and found.status == "ok", found
    largest = int(found.data["largest"])
    results.update(search_s=round(time.perf_counter() - started, 1), largest_batch=largest)
    with tempfile.TemporaryDirectory() as scratch:
        torch.cuda.reset_peak_memory_stats()
        summary = brickwork.fit(
            None,
            overrides=[*TIMM, f"data.batch_size={largest}", "trainer.max_epochs=1"],
            run_dir=Path(scratch) / "run",
        )
    peak = torch.cuda.max_memory_allocated()
    results.update(run_peak_bytes=peak, run_oom=summary["out_of_memory"])
    assert summary["out_of_memory"]["num_recoveries"] == 0, "the found batch ran out of memory"
    assert peak <= budget, f"peak {peak} over the {budget} budget"

    total = torch.cuda.get_device_properties(0).total_memory
    hidden = 65536
    per_sample = hidden * 4 * 4  # the hidden activations, their ReLU, and their gradients
    batch = min(262144, int(2 * total / per_sample))  # about twice the card
    with tempfile.TemporaryDirectory() as scratch:
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
            run_dir=Path(scratch) / "run",
        )
    oom = summary["out_of_memory"]
    results.update(oom_batch=batch, oom_summary=oom, oom_status=summary["status"])
    assert summary["status"] == "completed", summary["stop"]
    assert oom["num_recoveries"] >= 1 and oom["micro_batch_size"] < batch, oom
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check_doctor: skipped: no CUDA device")
        return 0
    results = check_doctor()
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
