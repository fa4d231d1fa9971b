"""`brickwork train [CONFIG] [key=value ...]`: train and write a run folder.

With `trainer.devices=N` (N > 1) the command re-launches itself through torchrun's
launcher, one process per device; under torchrun or srun it trains as one rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
    if args.resume in (None, "auto"):
        from brickwork.config import load_config

        # The schema check needs no torch: a typo is reported in a fraction of a second.
        load_config(config, overrides, check_components=False)

    from brickwork.distributed import launch_processes, should_launch

    trainer = _trainer_config(config, overrides, args.resume)
    if should_launch(trainer):
        return launch_processes(trainer.devices, _argv(args))

    from brickwork.loop import fit
    from brickwork.preemption import EXIT_PREEMPTED

    summary = fit(
        config,
        overrides=overrides,
        run_dir=args.run_dir,
        resume=args.resume,
        resume_force=args.resume_force,
    )
    if summary["status"] == "preempted":
        return EXIT_PREEMPTED
    return 0 if summary["status"] in ("completed", "early_stopped") else 1


def split_config_and_overrides(values: list[str]) -> tuple[Path | None, list[str]]:
    """The first value is the config file unless it looks like `key=value`."""
    if values and "=" not in values[0]:
        return Path(values[0]), values[1:]
    return None, values


def _trainer_config(config: Path | None, overrides: list[str], resume: Path | None) -> Any:
    """The trainer section as the run will see it (a resumed run reads its own config).

    Validating here also means a config mistake is reported once, before any launch.
    """
    from brickwork.config import load_config

    if config is None and resume is not None:
        from brickwork.checkpoint import resolve_checkpoint
        from brickwork.run import run_dir_of

        config = run_dir_of(resolve_checkpoint(resume)) / "config.yaml"
    return load_config(config, overrides).trainer


def _argv(args: argparse.Namespace) -> list[str]:
    """The command line each launched rank runs (the same one, minus the launch)."""
    argv = ["train", *args.args]
    if args.run_dir is not None:
        argv += ["--run-dir", str(args.run_dir)]
    if args.resume is not None:
        argv += ["--resume", str(args.resume)]
    return argv
