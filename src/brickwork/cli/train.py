"""`brickwork train [CONFIG] [key=value ...]`: train and write a run folder.

With `trainer.devices=N` (N > 1) the command re-launches itself through torchrun's
launcher, one process per device; under torchrun or srun it trains as one rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="a YAML config (default: the built-in digits config), then dotted overrides "
        "such as optimizer.lr=0.01 trainer.max_epochs=5",
    )
    parser.add_argument(
        "--run-dir", type=Path, help="write the run here instead of runs/<name>/<id>"
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR|CHECKPOINT|auto",
        help="continue a run from its last checkpoint (or from the checkpoint folder given); "
        "auto: continue the newest unfinished run of this config's name, or start a new one",
    )
    parser.add_argument(
        "--resume-force",
        action="store_true",
        help="resume even if the new config changes the math (batch size, model, data, ...)",
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.errors import ConfigError

    config, overrides = split_config_and_overrides(args.args)
    if args.resume is not None and args.run_dir is not None:
        raise ConfigError("--resume continues in the run's own folder; drop --run-dir")
    if args.resume_force and args.resume is None:
        raise ConfigError("--resume-force only applies with --resume; add --resume RUN_DIR")
    if args.resume not in (None, "auto") and not Path(args.resume).exists():
        raise ConfigError(
            f"--resume {args.resume}: no such run folder or checkpoint; "
            "pass a folder under runs/, or --resume auto"
        )
    if config is not None and not config.is_file():
        raise ConfigError(f"{config}: config file not found; pass the path to a YAML file")

    from brickwork.run import resolve_training

    # Validated once, here; a typo is reported before torch is imported.
    plan = resolve_training(config, overrides, args.resume)
    from brickwork.cli.launch import launch_processes, should_launch

    if should_launch(plan.config.trainer):
        return launch_processes(
            plan.config.trainer.devices, _argv(args, plan.resume_from, plan.restart_in)
        )

    from brickwork.loop import fit
    from brickwork.stop import StopKind

    summary = fit(
        plan.config,
        run_dir=args.run_dir if args.run_dir is not None else plan.restart_in,
        resume=plan.resume_from,
        resume_force=args.resume_force,
    )
    return StopKind(summary["stop"]["kind"]).exit_code


def split_config_and_overrides(values: list[str]) -> tuple[Path | None, list[str]]:
    """The first value is the config file unless it looks like `key=value`."""
    if values and "=" not in values[0]:
        return Path(values[0]), values[1:]
    return None, values


def _argv(
    args: argparse.Namespace, resume_from: Path | None = None, restart_in: Path | None = None
) -> list[str]:
    """The command line each launched rank runs (the same one, minus the launch).

    The ranks get the checkpoint this process already chose, so `--resume auto` and a
    fallback from a corrupt `last` are decided (and reported) once, not once per rank.
    """
    argv = ["train", *args.args]
    if args.run_dir is not None:
        argv += ["--run-dir", str(args.run_dir)]
    elif restart_in is not None:
        argv += ["--run-dir", str(restart_in)]
    if args.resume is not None and resume_from is not None:
        argv += ["--resume", str(resume_from)]
    elif args.resume is not None and restart_in is None and args.resume != "auto":
        argv += ["--resume", str(args.resume)]
    if args.resume_force and "--resume" in argv:
        argv.append("--resume-force")
    return argv
