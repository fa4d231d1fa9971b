"""Shared fixtures: a fast digits config, a scratch run folder, and a CLI runner.

Tests train for real on the embedded digits dataset; `fast_overrides` keeps each
run to a second or two on a 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
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
