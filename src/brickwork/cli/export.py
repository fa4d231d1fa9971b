"""`brickwork export RUN_DIR --format safetensors|torchscript|onnx|hf`: a deployable model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "--format", default="safetensors", choices=["safetensors", "torchscript", "onnx", "hf"]
    )
    parser.add_argument(
        "--output", type=Path, help="the file (hf: the folder) to write (default: RUN_DIR/export/)"
    )
    parser.add_argument("--checkpoint", default="best", help="best, last, or a checkpoint folder")
    parser.add_argument(
        "--force", action="store_true", help="replace existing files at --output (and config.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.export import export_run

    result = export_run(args.run_dir, args.format, args.output, args.checkpoint, force=args.force)
    print(
        f"wrote {result['path']} ({result['format']}, outputs match the checkpoint "
        f"within {result['max_abs_diff']:.1e})"
    )
    return 0
