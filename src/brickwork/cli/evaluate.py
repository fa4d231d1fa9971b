"""`brickwork evaluate RUN_DIR`: metrics of a trained run's checkpoint on one split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="inference-time settings, e.g. data.test_csv=other.csv trainer.device=cpu",
    )
    parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint folder")
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--output", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--force", action="store_true", help="replace an existing --output file")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from brickwork.files import refuse_to_replace
    from brickwork.inference import evaluate_run

    if args.output is not None:
        refuse_to_replace(args.output, "--output", args.force)
    results = evaluate_run(args.run_dir, args.checkpoint, args.split, args.overrides)
    text = json.dumps(results, indent=2)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    console = Console()
    for key, value in results["metrics"].items():
        console.print(f"{key}: {value:.4f}", highlight=False)
    return 0
