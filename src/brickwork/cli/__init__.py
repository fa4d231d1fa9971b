"""The `brickwork` command. Each subcommand lives in its own module, imported only
when run, so `brickwork --help` answers without importing torch.

User mistakes (`BrickworkError`) print one line and exit with code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

EXIT_USER_ERROR = 2

# OS errors that are the machine's state, not a bug: one line, exit 2, like user mistakes.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("brickwork.cli.train", "train a model from a YAML config"),
    "evaluate": ("brickwork.cli.evaluate", "compute metrics of a trained run on a split"),
    "predict": ("brickwork.cli.predict", "write predictions for new inputs to a CSV file"),
    "inspect": ("brickwork.cli.inspection", "show a config's model: modules, parameters, shapes"),
    "export": ("brickwork.cli.export", "write a trained model as safetensors, TorchScript or ONNX"),
    "tune": ("brickwork.cli.tune", "search hyperparameters: Optuna here, Ray Tune on a cluster"),
    "doctor": ("brickwork.cli.doctor", "check a config, the machine and a few real steps"),
    "runs": ("brickwork.cli.runs", "list runs as a table (filter, sort, JSON), or diff two runs"),
    "board": ("brickwork.cli.board", "serve TensorBoard over a runs folder on 127.0.0.1"),
    "report": ("brickwork.cli.report", "write an HTML report of runs or a study, with figures"),
    "new": ("brickwork.cli.new", "create a project (configs, model, data, tests) that trains"),
    "add": ("brickwork.cli.add", "add a registered model, dataset or callback stub to a project"),
    "ls": ("brickwork.cli.ls", "list registered components with their arguments and defaults"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brickwork",
        description="Config-driven PyTorch training with an explicit, readable loop.",
    )
    parser.add_argument("--version", action="version", version=f"brickwork {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = _parse(build_parser(), argv)
    _log_warnings_to_stderr()
    from brickwork.errors import BrickworkError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except BrickworkError as error:
        print(f"brickwork {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        if error.errno not in _DISK_ERRNOS:
            raise
        where = f" {error.filename}" if error.filename else ""
        print(
            f"brickwork {args.command}: error: cannot write{where}: {error.strerror}; "
            "free disk space or make the folder writable, then run again",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"brickwork {args.command}: interrupted", file=sys.stderr)
        return 130


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, taking `key=value` overrides after options too (`predict RUN --input X
    --output Y data.on_bad_image=skip`), which argparse alone leaves unrecognised."""
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    dest = next((d for d in ("overrides", "args") if isinstance(getattr(args, d, None), list)), "")
    if rest and (overrides != rest or not dest):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if overrides:
        setattr(args, dest, [*getattr(args, dest), *overrides])
    return args


def _log_warnings_to_stderr() -> None:
    log = logging.getLogger("brickwork")
    if not any(getattr(h, "_brickwork_console", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setLevel(logging.INFO)
        # Warnings, plus the few facts a user must see (`extra={"console": True}`).
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or getattr(r, "console", False))
        handler.setFormatter(_ConsoleFormatter())
        handler._brickwork_console = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes, not the one at creation:
    `main` called in-process again (tests, notebooks) must not write to a closed stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        return f"brickwork: {level}{record.getMessage()}"


def _version() -> str:
    from brickwork import __version__

    return __version__
