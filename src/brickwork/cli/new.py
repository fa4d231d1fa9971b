"""`brickwork new NAME [--template image|text|tabular]`: a project that trains on the first try."""

from __future__ import annotations

import argparse
from pathlib import Path

from brickwork.scaffold import TEMPLATES  # standard library only: `--help` stays torch-free


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="project and package name, e.g. my_project")
    parser.add_argument(
        "--template",
        default="image",
        choices=TEMPLATES,
        help="image: digits CNN; text: topic sentences; tabular: customer table (default image)",
    )
    parser.add_argument(
        "--directory", type=Path, default=Path("."), help="where to create NAME/ (default: here)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")


def run(args: argparse.Namespace) -> int:
    from brickwork.scaffold import create_project

    root = create_project(args.name, args.directory, args.template, args.force)
    print(f"created {root}/ from the {args.template} template. Next:")
    print(f"  cd {root}")
    print("  pytest                                    # the project's own tests")
    print("  brickwork train configs/base.yaml         # train; README.md lists the rest")
    return 0
