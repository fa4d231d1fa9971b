"""Checkpoint folders: atomic, verified, loadable without brickwork and without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from brickwork.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    point_alias,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from brickwork.errors import CheckpointError


def _state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "numpy": np.random.RandomState(seed).get_state(),
        "tuple": (1, 2.5, None),
        "inf": float("inf"),
    }


def test_round_trip_restores_every_value(tmp_path: Path) -> None:
    state = _state()
    folder = save_checkpoint(state, tmp_path, step=7)
    loaded = load_checkpoint(folder)
    for key, tensor in state["model"].items():
        assert torch.equal(loaded["model"][key], tensor)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for index, moments in state["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], value)
    assert loaded["tuple"] == (1, 2.5, None) and loaded["inf"] == float("inf")
    assert np.array_equal(loaded["numpy"][1], state["numpy"][1])


def test_model_weights_load_with_plain_safetensors(tmp_path: Path) -> None:
    state = _state()
    folder = save_checkpoint(state, tmp_path, step=1)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    assert torch.equal(model[0].weight, state["model"]["0.weight"])


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    embedding = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = embedding.weight
    model = nn.ModuleDict({"embedding": embedding, "head": head})
    folder = save_checkpoint({"model": model.state_dict()}, tmp_path, step=1)
    loaded = load_file(folder / "model.safetensors")
    assert torch.equal(loaded["head.weight"], loaded["embedding.weight"])


def test_no_file_in_a_checkpoint_is_a_pickle(tmp_path: Path) -> None:
    folder = save_checkpoint(_state(), tmp_path, step=1)
    for file in folder.iterdir():
        assert not file.read_bytes().startswith(b"\x80"), f"{file.name} looks like a pickle"
    json.loads((folder / "state.json").read_text())


def test_a_corrupt_checkpoint_is_detected_and_the_previous_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = save_checkpoint(_state(0), tmp_path, step=1)
    second = save_checkpoint(_state(1), tmp_path, step=2)
    point_alias(tmp_path, "last", second)
    weights = second / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(second)
    assert resolve_checkpoint(tmp_path, "last") == first
    assert "corrupt" in caplog.text


def test_a_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    folder = save_checkpoint(_state(), tmp_path, step=3)
    path = folder / "state.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(folder)


def test_a_folder_without_manifest_is_incomplete(tmp_path: Path) -> None:
    folder = save_checkpoint(_state(), tmp_path, step=3)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(folder)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_debris(tmp_path: Path) -> None:
    good = save_checkpoint(_state(), tmp_path, step=1)
    bad_state = {**_state(), "unstorable": object()}
    with pytest.raises(TypeError):
        save_checkpoint(bad_state, tmp_path, step=2)
    assert list_checkpoints(tmp_path) == [good]
    assert not list(tmp_path.glob(".tmp-*"))
    load_checkpoint(good)


def test_pruning_keeps_the_newest_and_every_alias_target(tmp_path: Path) -> None:
    folders = [save_checkpoint(_state(), tmp_path, step=s) for s in (1, 2, 3, 4)]
    point_alias(tmp_path, "best", folders[0])
    point_alias(tmp_path, "last", folders[3])
    prune_checkpoints(tmp_path, keep_k=1)
    assert list_checkpoints(tmp_path) == [folders[0], folders[3]]
    assert (tmp_path / "best").resolve() == folders[0].resolve()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(_state(), tmp_path, step=1)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="upgrade brickwork"):
        load_checkpoint(folder)
