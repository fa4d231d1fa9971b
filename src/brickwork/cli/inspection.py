"""`brickwork inspect [CONFIG] [key=value ...]`: the model a config builds, module by module.

Builds the data and the model (with `finetune.freeze` applied), runs one real batch
through it with forward hooks, and prints each module's parameter count, whether it is
trainable or frozen, its output shape, and the parameter memory in total.
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
    import torch

    from brickwork.cli.train import split_config_and_overrides
    from brickwork.components import build_split_loader, split_batch
    from brickwork.config import load_config
    from brickwork.data import build_data
    from brickwork.finetune import freeze_parameters
    from brickwork.models import build_model
    from brickwork.models.summary import (
        describe_shape,
        format_summary,
        parameter_totals,
        summarize_model,
    )

    path, overrides = split_config_and_overrides(args.args)
    config = load_config(path, overrides)
    torch.manual_seed(config.seed)
    data = build_data(config)
    model = build_model(config.model, data)
    freeze_parameters(model, config.finetune)
    loader = build_split_loader(config, data, "train")
    inputs, _ = split_batch(next(iter(loader)))
    rows = summarize_model(model, inputs, depth=args.depth)
    print(f"{config.model.name} on {config.data.name}: one batch of {describe_shape(inputs)}")
    print(format_summary(rows, parameter_totals(model)))
    return 0
