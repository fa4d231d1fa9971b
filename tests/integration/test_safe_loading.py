"""No file brickwork loads can run code: a pickle that smuggles code is refused unread."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from brickwork.checkpoint import MANIFEST_FILE, MODEL_FILE, _sha256, load_checkpoint
from brickwork.errors import CheckpointError
from brickwork.loop import fit
from tests.conftest import run_cli

SOURCE = Path(__file__).resolve().parents[2] / "src" / "brickwork"


class Smuggler:
    """Unpickling this runs `os.system`: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _plant(checkpoint: Path, payload: bytes) -> None:
    """Replace the weights by `payload` and fix the manifest, as a careful attacker would."""
    (checkpoint / MODEL_FILE).write_bytes(payload)
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    entry = manifest["files"][MODEL_FILE]
    entry["size"], entry["sha256"] = len(payload), _sha256(checkpoint / MODEL_FILE)
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickle_with_code_is_refused_and_never_run(
    tmp_path: Path, fast_overrides: list[str], kind: str
) -> None:
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    fit(overrides=[*fast_overrides, "trainer.max_steps=3"], run_dir=run_dir)
    checkpoint = (run_dir / "checkpoints" / "last").resolve()
    if kind == "pickle":
        payload = pickle.dumps(Smuggler(marker))
    else:
        torch.save({"weight": Smuggler(marker)}, tmp_path / "evil.pt")
        payload = (tmp_path / "evil.pt").read_bytes()
    _plant(checkpoint, payload)

    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(checkpoint)
    # One loader per kind through the CLI: evaluate reads weights, resume reads all state.
    command = (
        ["evaluate", str(run_dir), "--checkpoint", "last"]
        if kind == "pickle"
        else ["train", "--resume", str(run_dir)]
    )
    result = run_cli(command)
    assert result.returncode == 2, result.stderr
    assert "can run code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_no_loader_in_brickwork_can_unpickle() -> None:
    """Every load goes through safetensors or JSON; a new `torch.load` must say weights_only."""
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"pickle\.loads?\(|allow_pickle=True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
