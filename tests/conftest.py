"""Shared fixtures: a fast digits config, a scratch run folder, and a CLI runner.

Tests train for real on the embedded digits dataset; `fast_overrides` keeps each
run to a second or two on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO
from unittest import mock

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The suite runs on two workers (one per core of the 2-core budget machine), and many tests
# start subprocesses or torchrun ranks beside them: one compute thread per process keeps
# torch's thread pools from spinning against each other on the shared cores. Set before
# torch is imported, so it holds here and in every subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tools that cache in the home folder (matplotlib's fonts, via torchmetrics; Hugging Face)
# cache in one scratch folder per test session instead.
_SCRATCH = tempfile.mkdtemp(prefix="brickwork-tests-")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_SCRATCH, "matplotlib"))
os.environ.setdefault("HF_HOME", os.path.join(_SCRATCH, "huggingface"))
# Subprocesses (the CLI, torchrun's ranks) run in a scratch folder: point them at the
# brickwork under test by absolute path, not at whatever a relative PYTHONPATH finds.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[1] / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SOURCE_ROOT, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

# A short run of the default config: 2 epochs, small CNN; the last two entries turn off
# the progress bar and TensorBoard (drop them with FAST[:-2] to test those).
FAST = [
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=5",
    "trainer.test_after_fit=false",
    "model.channels=[8,16]",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
]


@pytest.fixture
def fast_overrides() -> list[str]:
    return list(FAST)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so `runs/` never lands in the repository."""
    monkeypatch.chdir(tmp_path)


def run_cli(
    args: Sequence[str], cwd: Path | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m brickwork ARGS` in a real subprocess, as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "brickwork", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "200"},
    )


def run_cli_in_process(
    args: Sequence[str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `brickwork ARGS` through `cli.main` in this process, seen as a shell sees it.

    Saves a Python start-up per call where the process is not the point. Output is caught
    at the file-descriptor level (what torch or a C library prints counts too), and an
    exception that escapes `main` is printed as the interpreter would, with exit code 1.
    """
    from brickwork import cli

    wide = mock.patch.dict(os.environ, {"COLUMNS": "200"})  # as run_cli's terminal
    with _captured_output() as (out, err):
        with _cwd(cwd), wide:
            _drop_console_handlers()  # main binds a fresh one to the captured stderr
            try:
                code = cli.main(list(args))
            except SystemExit as stop:  # argparse's usage errors
                code = stop.code if isinstance(stop.code, int) else 1
            except BaseException:  # a real process would print it and exit 1
                traceback.print_exc()
                code = 1
            finally:
                _drop_console_handlers()
        return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


class _Captured:
    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def getvalue(self) -> str:
        self.file.flush()
        self.file.seek(0)
        return self.file.read()


@contextlib.contextmanager
def _captured_output() -> Iterator[tuple[_Captured, _Captured]]:
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    sys.stdout.flush(), sys.stderr.flush()
    with (
        tempfile.TemporaryFile("w+", errors="replace") as out,
        tempfile.TemporaryFile("w+", errors="replace") as err,
    ):
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                yield _Captured(out), _Captured(err)
        finally:
            out.flush(), err.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


@contextlib.contextmanager
def _cwd(folder: Path | None) -> Iterator[None]:
    before = Path.cwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _drop_console_handlers() -> None:
    log = logging.getLogger("brickwork")
    for handler in [h for h in log.handlers if getattr(h, "_brickwork_console", False)]:
        log.removeHandler(handler)


# The same, with the MLP instead of the CNN (no BatchNorm; dropout set per test).
FAST_MLP = [o for o in FAST if not o.startswith("model.")] + ["model.name=mlp"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT and its WordPiece tokenizer saved with save_pretrained (built once)."""
    pytest.importorskip("transformers")
    from tests.hf_models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in the test go to a copy of the tables, gone after it.

    Generated projects register the same component names (each template's model, the
    example callback), so two projects imported in one process would clash otherwise.
    """
    from brickwork import registry

    for kind in registry.KINDS:
        registry.available(kind)  # built-ins register into the real tables, once
    tables = {kind: dict(table) for kind, table in registry._TABLES.items()}
    monkeypatch.setattr(registry, "_TABLES", tables)
    monkeypatch.setattr(sys, "path", list(sys.path))  # projects add their folders to it
