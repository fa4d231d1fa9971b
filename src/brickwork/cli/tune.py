"""`brickwork tune [CONFIG] --space SPACE.yaml [key=value ...]`: a hyperparameter search.

Every trial is an ordinary run folder inside the study folder; the study ends with
`trials.csv`, `best.yaml` and plots (docs/tune.md). The space, the budget and the
metric may also sit in the config under `tune:`; flags here win.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

ENGINES = ("optuna", "ray")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "bohb")
PRUNERS = ("none", "median", "hyperband", "asha", "pbt")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [key=value ...]",
        help="the config every trial starts from, then overrides applied to all trials",
    )
    parser.add_argument("--space", type=Path, help="SPACE.yaml: dotted keys -> distributions")
    parser.add_argument("--trials", type=int, help="number of trials (default 20, or the grid)")
    parser.add_argument("--timeout", help="start no trial after this long: 90s, 30m, 2h")
    parser.add_argument("--engine", choices=ENGINES, help="optuna (default) or ray")
    parser.add_argument("--sampler", choices=SAMPLERS, help="default: grid for lists, else tpe")
    parser.add_argument("--pruner", choices=PRUNERS, help="stop hopeless trials (default median)")
    parser.add_argument("--metric", help="metric to optimise (default: checkpoint.monitor)")
    parser.add_argument("--mode", choices=("min", "max"), help="default checkpoint.mode")
    parser.add_argument("--workers", type=int, default=1, help="trials at once on this machine")
    parser.add_argument("--study-dir", type=Path, help="default: studies/<config name>")
    parser.add_argument(
        "--resume", action="store_true", help="continue the study in --study-dir (same command)"
    )
    parser.add_argument("--address", help="ray: join this cluster (ray://host:10001 or host:port)")
    parser.add_argument("--run-trial", type=int, help=argparse.SUPPRESS)  # one rank of a trial
    parser.add_argument("--resources-per-trial", help="ray: e.g. cpu=2,gpu=0.5 (default cpu=1)")
    parser.add_argument(
        "--perturbation-interval-steps",
        type=int,
        default=100,
        help="ray pbt: optimizer steps between exploit/explore decisions (default 100)",
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.cli.train import split_config_and_overrides
    from brickwork.errors import ConfigError

    if args.run_trial is not None:  # started by a worker through torchrun
        from brickwork.tune.optuna_engine import run_launched_rank
        from brickwork.tune.study import StudyFolder

        return run_launched_rank(StudyFolder(args.study_dir), args.run_trial)
    config_path, overrides = split_config_and_overrides(args.args)
    if config_path is not None and not config_path.is_file():
        raise ConfigError(f"{config_path}: config file not found; pass the path to a YAML file")
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: needs at least 1")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: needs at least 1")
    settings, name = _settings(args, config_path, overrides)

    from brickwork.tune.search import run_search
    from brickwork.tune.study import StudyFolder

    folder = StudyFolder(args.study_dir or Path("studies") / name)
    if args.resume:
        if not folder.exists():
            raise ConfigError(
                f"--resume: {folder.directory} holds no study; drop --resume to start one"
            )
        folder.resume(settings)
    else:
        folder.create(settings)
    print(f"brickwork tune: study folder {folder.directory}", flush=True)
    return run_search(folder)


def _settings(args: argparse.Namespace, config_path: Path | None, overrides: list[str]) -> Any:
    """The study's settings from flags, then the config's `tune:` section, then defaults."""
    from brickwork.config import TuneConfig, load_config
    from brickwork.errors import ConfigError
    from brickwork.tune.space import check_space, parse_space, read_space_file
    from brickwork.tune.study import DEFAULT_NUM_TRIALS, Engine, StudySettings

    base = load_config(config_path, overrides)
    tune = base.tune or TuneConfig()
    if args.space is not None:
        source, raw_space = str(args.space), read_space_file(args.space)
    elif tune.space:
        source, raw_space = f"{config_path or 'the default config'}: tune.space", tune.space
    else:
        raise ConfigError(
            "no search space: pass --space SPACE.yaml or put tune.space in the config "
            "(e.g. optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]})"
        )
    space = parse_space(raw_space, source)
    check_space(space, config_path, overrides, source)
    engine: Engine = args.engine or "optuna"
    sampler = args.sampler or tune.sampler or ("grid" if space.is_grid else "tpe")
    pruner = args.pruner or tune.pruner
    _check_engine(engine, sampler, pruner)
    num_trials = args.trials or tune.num_trials or DEFAULT_NUM_TRIALS
    if sampler == "grid":
        ranges = [p.key for p in space.params if not p.is_categorical]
        if ranges:
            raise ConfigError(
                f"--sampler grid: {', '.join(ranges)} is a range; a grid needs a list of "
                "values (or {choice: [...]}) for every key, or use --sampler tpe"
            )
        num_trials = min(args.trials or tune.num_trials or space.grid_size(), space.grid_size())
    settings = StudySettings(
        engine=engine,
        config=str(config_path.resolve()) if config_path else None,
        overrides=list(overrides),
        space=space.to_dict(),
        metric=args.metric or tune.metric or base.checkpoint.monitor,
        mode=args.mode or tune.mode or base.checkpoint.mode,
        num_trials=num_trials,
        timeout_s=parse_duration(args.timeout) if args.timeout else tune.timeout_s,
        sampler=sampler,
        pruner=pruner,
        workers=args.workers,
        seed=base.seed,
        ray={
            "address": args.address,
            "resources": parse_resources(args.resources_per_trial),
            "perturbation_interval_steps": args.perturbation_interval_steps,
        },
    )
    if engine == "ray":
        from brickwork.tune.ray_engine import check_ray_settings

        check_ray_settings(settings)
    else:
        from brickwork.tune.optuna_engine import check_sampler

        check_sampler(settings)
    return settings, base.name


def _check_engine(engine: str, sampler: str, pruner: str) -> None:
    from brickwork.errors import ConfigError

    if engine == "optuna" and (sampler == "bohb" or pruner == "pbt"):
        chosen = "--sampler bohb" if sampler == "bohb" else "--pruner pbt"
        raise ConfigError(
            f"{chosen} runs on Ray Tune: add --engine ray (pip install 'brickwork[ray]'), "
            "or use --sampler tpe --pruner hyperband with Optuna"
        )
    if engine == "ray" and sampler == "cmaes":
        raise ConfigError("--sampler cmaes runs on Optuna: drop --engine ray, or use tpe")
    if sampler == "bohb" and pruner not in ("hyperband", "none"):
        raise ConfigError(
            f"--sampler bohb comes with its own HyperBand scheduler: use --pruner hyperband, "
            f"not {pruner}"
        )


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d` or plain seconds."""
    from brickwork.errors import ConfigError

    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--timeout {text}: expected a duration such as 90s, 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_resources(text: str | None) -> dict[str, float]:
    """`cpu=2,gpu=0.5` -> {"cpu": 2.0, "gpu": 0.5}."""
    from brickwork.errors import ConfigError

    if not text:
        return {"cpu": 1.0}
    resources: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if key.strip() not in ("cpu", "gpu") or amount < 0:
            raise ConfigError(
                f"--resources-per-trial {text}: expected cpu=N,gpu=M, e.g. cpu=2,gpu=0.5"
            )
        resources[key.strip()] = amount
    resources.setdefault("cpu", 1.0)  # `gpu=1` alone still holds a CPU for the trial
    return resources
