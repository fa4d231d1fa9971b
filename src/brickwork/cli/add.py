"""`brickwork add model|dataset|callback NAME`: a registered stub, a config and a test."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        choices=["model", "dataset", "callback"],
        metavar="KIND",
        help="model, dataset or callback",
    )
    parser.add_argument("name", metavar="NAME", help="the name to register, e.g. my_net")
    parser.add_argument(
        "--project", type=Path, default=Path("."), help="the project folder (default: here)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing config or test")


def run(args: argparse.Namespace) -> int:
    from brickwork.scaffold import add_component

    module, *new = [
        _shown(path) for path in add_component(args.kind, args.name, args.project, args.force)
    ]
    print(f"added {args.kind} '{args.name}' to {module}")
    for path in new:
        print(f"wrote {path}")
    print(f"try it:  brickwork train {new[0]}")
    return 0


def _shown(path: Path) -> str:
    """The path relative to the working folder when it is inside it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
