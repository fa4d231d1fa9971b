"""`brickwork doctor [CONFIG] [key=value ...]`: check a config, the machine and a few real
steps before training for real; a report on the terminal and in `doctor.json`.

Exit 0 when every check passed (warnings are advice), 1 when one failed, 2 for a
mistake on the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="a YAML config (default: the built-in digits config), then dotted overrides",
    )
    parser.add_argument(
        "--find-batch-size",
        action="store_true",
        help="find the largest batch that fits (real steps; doubling, then bisection) and "
        "print the overrides that keep the effective batch",
    )
    parser.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory the batch-size search may use, e.g. 2GiB (default: the GPU's memory, "
        "or the machine's available memory on the CPU)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=0.1,
        help="share of the budget kept free by the batch-size search (default: 0.1)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("doctor.json"),
        help="where to write the JSON report (default: doctor.json)",
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.cli.train import split_config_and_overrides
    from brickwork.errors import ConfigError

    if args.memory_budget is not None and not args.find_batch_size:
        raise ConfigError("--memory-budget applies to the batch-size search; add --find-batch-size")
    if not 0 <= args.margin < 1:
        raise ConfigError(f"--margin {args.margin}: must be in [0, 1), e.g. 0.1 for 10%")
    if args.output.is_dir():
        raise ConfigError(f"--output {args.output}: is a folder; pass a file path like doctor.json")
    from brickwork.doctor.batch_size import parse_memory_size
    from brickwork.doctor.report import check_output

    check_output(args.output)

    budget = parse_memory_size(args.memory_budget) if args.memory_budget is not None else None
    path, overrides = split_config_and_overrides(args.args)
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path to a YAML file")
    if (devices := _devices_to_launch(path, overrides)) > 1:
        from brickwork.cli.launch import launch_processes

        return launch_processes(devices, _argv(args))
    from brickwork.doctor import run_doctor

    report = run_doctor(
        path,
        overrides,
        find_batch_size=args.find_batch_size,
        memory_budget_bytes=budget,
        margin=args.margin,
    )
    if report.main_process:  # under torchrun rank 0 alone prints and writes
        print(report.format())
        report.save(args.output)
        print(f"report: {args.output}")
    return 0 if report.healthy else 1


def _devices_to_launch(path: Path | None, overrides: list[str]) -> int:
    """`trainer.devices=N` outside torchrun: the doctor re-runs itself as N ranks."""
    from brickwork.cli.launch import should_launch
    from brickwork.errors import BrickworkError
    from brickwork.run import resolve_training

    try:
        trainer = resolve_training(path, overrides).config.trainer
    except BrickworkError:
        return 1  # the doctor reports the config's own mistake as its first check
    return trainer.devices if should_launch(trainer) else 1


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line each launched rank runs: the same one, the output made absolute."""
    argv = ["doctor", *args.args, "--margin", str(args.margin)]
    argv += ["--output", str(args.output.resolve())]
    if args.find_batch_size:
        argv.append("--find-batch-size")
    if args.memory_budget is not None:
        argv += ["--memory-budget", args.memory_budget]
    return argv
