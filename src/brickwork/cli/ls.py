"""`brickwork ls KIND`: the registered components of a kind, with arguments and defaults.

brickwork ls models                         built-ins, and the project's own (read from
                                            configs/base.yaml inside a project)
brickwork ls models --filter 'resnet*'      also timm/ and torchvision/ names that match
brickwork ls datasets --imports my_project.data
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        metavar="KIND",
        help="models, datasets, optimizers, schedulers, losses, metrics or callbacks",
    )
    parser.add_argument(
        "--filter", metavar="PATTERN", help="a glob ('resnet*', 'timm/*') or a part of the name"
    )
    parser.add_argument(
        "--imports", nargs="+", default=[], metavar="MODULE", help="project modules or .py files"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="read the project's modules from this config's imports: "
        "(default: configs/base.yaml of the project you are in)",
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.component_catalog import list_entries, resolve_kind

    kind = resolve_kind(args.kind)
    _import_project(args.config, args.imports)
    entries, left_off = list_entries(kind, args.filter)
    if not entries:
        print(f"no {kind} matches '{args.filter}'")
        return 0
    zoo = " (timm/ and torchvision/ names: add --filter PATTERN)" if kind == "model" else ""
    shown = f" matching '{args.filter}'" if args.filter else ""
    print(
        f"{len(entries)} {kind} name(s){shown}{'' if args.filter else zoo}; arguments and defaults:"
    )
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.describe_arguments()}")
        if entry.summary:
            print(f"{'':<{width}}  {entry.summary}  [{entry.module}]")
    if left_off:
        print(f"... and {left_off} more timm/torchvision names: narrow the --filter pattern")
    return 0


def _import_project(config: Path | None, imports: list[str]) -> None:
    """Import the modules the config lists (or the project's base config) and `--imports`."""
    from brickwork.config import read_config
    from brickwork.errors import ConfigError
    from brickwork.registry import import_project_modules

    if config is None:
        config = _project_config()
    try:
        if config is not None:
            listed = read_config(config).get("imports") or []
            import_project_modules([str(m) for m in listed], config.parent)
        import_project_modules(imports, Path.cwd())
    except (ImportError, FileNotFoundError, SyntaxError) as error:
        raise ConfigError(f"imports: {error}; check the module name or path") from error


def _project_config() -> Path | None:
    """configs/base.yaml of the project around the working folder, if there is one."""
    from brickwork.errors import ProjectError
    from brickwork.scaffold import find_project

    try:
        root, _, _ = find_project(Path.cwd())
    except ProjectError:
        return None
    base = root / "configs" / "base.yaml"
    return base if base.is_file() else None
