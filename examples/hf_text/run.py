"""Pre-train a tiny masked language model, then fine-tune it against the same model from scratch.

    python examples/hf_text/run.py [WORK_DIR] [MINUTES]   # default: a fresh /tmp folder, 12 minutes

Writes the corpus and the labelled task (corpus.py), pre-trains a BERT for MINUTES
(pretrain.py), then runs `brickwork train finetune.yaml` through the CLI, as a user
would, for the pre-trained folder and for its untrained twin, seeds 0, 1, 2 each.
Prints a Markdown table of test accuracy (mean, spread and each seed).
One CPU thread per process (OMP_NUM_THREADS=1): the machine is shared.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
VARIANTS = {
    "pre-trained (masked LM on the corpus), fine-tuned": "hf/pretrained",
    "same model from scratch": "hf/scratch",
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def brickwork(*args: str, cwd: Path) -> None:
    command = [sys.executable, "-m", "brickwork", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=ENV)
    if result.returncode != 0:
        raise SystemExit(f"brickwork {' '.join(args)} failed:\n{result.stderr}")


def main(work: Path, minutes: float) -> None:
    python = [sys.executable]
    subprocess.run([*python, str(HERE / "corpus.py"), str(work)], check=True, env=ENV)
    subprocess.run(
        [*python, str(HERE / "pretrain.py"), str(work), str(minutes)], check=True, env=ENV
    )
    print("\n| fine-tuning on 24 sentences per class (4 classes) | test accuracy | seeds |")
    print("|---|---|---|")
    for variant, model in VARIANTS.items():
        accuracies = []
        for seed in SEEDS:
            run_dir = f"runs/{model.removeprefix('hf/')}-seed{seed}"
            config = str(HERE / "finetune.yaml")
            brickwork(
                "train",
                config,
                f"seed={seed}",
                f"model.name={model}",
                "--run-dir",
                run_dir,
                cwd=work,
            )
            summary = json.loads((work / run_dir / "summary.json").read_text())
            accuracies.append(summary["test"]["test/acc"])
        mean, spread = statistics.mean(accuracies), statistics.stdev(accuracies)
        shown = ", ".join(f"{a:.3f}" for a in accuracies)
        print(f"| {variant} | {mean:.3f} ± {spread:.3f} | {shown} |", flush=True)


if __name__ == "__main__":
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hf-text-"))
    main(work.resolve(), float(sys.argv[2]) if len(sys.argv) > 2 else 12.0)
