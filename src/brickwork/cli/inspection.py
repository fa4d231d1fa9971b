"""`brickwork inspect [CONFIG] [key=value ...]`: the model a config builds, module by module.

Prints `brickwork.inspect_model`: each module's parameter count, whether it is
trainable or frozen, its output shape from one real batch, and the parameter memory.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="a YAML config (default: the built-in digits config), then dotted overrides",
    )
    parser.add_argument("--depth", type=int, default=2, help="module nesting to show (default: 2)")


def run(args: argparse.Namespace) -> int:
    from brickwork.cli.train import split_config_and_overrides
    from brickwork.inspection import inspect_model

    path, overrides = split_config_and_overrides(args.args)
    print(inspect_model(path, overrides, depth=args.depth))
    return 0
