"""Pretrain on digits 0-4, then compare three ways to learn digits 5-9 from 50 images.

    python examples/transfer/run.py [WORK_DIR]     # default: a fresh folder under /tmp

Everything goes through the `brickwork` CLI, as a user would run it: make the data,
pretrain, then train the target task with a frozen pretrained backbone, with full
fine-tuning of the pretrained weights, and from scratch, each with three seeds (the
frozen backbone also with a 10x learning rate: a linear head alone wants a larger one).
Prints a Markdown table of test accuracy (mean and spread over the seeds).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
VARIANTS = {
    "frozen backbone (pretrained), lr 0.003": ["model.pretrained={best}"],
    "frozen backbone (pretrained), lr 0.03": ["model.pretrained={best}", "optimizer.lr=0.03"],
    "full fine-tuning (pretrained), lr 0.003": ["model.pretrained={best}", "finetune.freeze=[]"],
    "from scratch, lr 0.003": ["finetune.freeze=[]"],
}


def brickwork(*args: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "brickwork", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr}")


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(HERE / "make_data.py"), "data"], cwd=work, check=True)
    brickwork("train", str(HERE / "pretrain.yaml"), "--run-dir", "runs/pretrain", cwd=work)
    pretrain = json.loads((work / "runs/pretrain/summary.json").read_text())
    best = (work / "runs/pretrain/checkpoints/best").resolve()
    print(f"pretraining on digits 0-4: val/acc {pretrain['best']['value']:.4f}\n")
    print("| target task (digits 5-9, 10 images per class) | test accuracy | seeds |")
    print("|---|---|---|")
    for variant, overrides in VARIANTS.items():
        accuracies = []
        for seed in SEEDS:
            run_dir = f"runs/variant{list(VARIANTS).index(variant)}-seed{seed}"
            extra = [o.format(best=best) for o in overrides]
            config = str(HERE / "finetune.yaml")
            brickwork("train", config, f"seed={seed}", *extra, "--run-dir", run_dir, cwd=work)
            summary = json.loads((work / run_dir / "summary.json").read_text())
            accuracies.append(summary["test"]["test/acc"])
        mean, spread = statistics.mean(accuracies), statistics.stdev(accuracies)
        shown = ", ".join(f"{a:.3f}" for a in accuracies)
        print(f"| {variant} | {mean:.3f} ± {spread:.3f} | {shown} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="transfer-")))
