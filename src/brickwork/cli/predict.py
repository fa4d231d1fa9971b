"""`brickwork predict RUN_DIR --input PATH --output FILE.csv`: predictions for new inputs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="inference-time settings, e.g. data.on_bad_image=skip trainer.device=cpu",
    )
    parser.add_argument("--input", type=Path, required=True, help="a file or folder of inputs")
    parser.add_argument("--output", type=Path, required=True, help="the CSV file to write")
    parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint folder")
    parser.add_argument("--force", action="store_true", help="replace an existing --output file")


def run(args: argparse.Namespace) -> int:
    from brickwork.inference import predict_run

    rows = predict_run(
        args.run_dir, args.input, args.output, args.checkpoint, args.overrides, args.force
    )
    print(f"wrote {rows} predictions to {args.output}")
    return 0
