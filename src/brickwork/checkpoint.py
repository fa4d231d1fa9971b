"""Checkpoints that survive crashes and cannot run code when loaded.

Layout of one checkpoint (a folder, written whole or not at all):

    checkpoints/step-00000120/
        model.safetensors   the model's plain state_dict: loads with safetensors alone
        state.safetensors   every other tensor (optimizer moments, RNG states, ...)
        state.json          everything else, with references to those tensors
        manifest.json       format version, and size and SHA-256 of each file above
    checkpoints/last -> step-00000120      (relative symlinks, swapped atomically)
    checkpoints/best -> step-00000090

Nothing is unpickled: tensors come from safetensors, the rest from JSON. A save
goes to a hidden temporary folder, each file is fsynced, the folder is renamed into
place and its parent fsynced, so a crash at any moment leaves the previous
checkpoint complete and the new one either absent or complete.

    >>> model.load_state_dict(safetensors.torch.load_file("checkpoints/best/model.safetensors"))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brickwork.errors import CheckpointError
from brickwork.files import fsync_directory, fsync_file

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
ALIASES = ("last", "best")

_STEP_DIR = re.compile(r"^step-(\d+)$")
log = logging.getLogger("brickwork")


def save_checkpoint(
    state: dict[str, Any], directory: Path, step: int, replace: bool = False
) -> Path:
    """Write `state` (a `TrainState.state_dict()` plus extras) as `directory/step-N`.

    Returns the checkpoint folder. If a complete checkpoint of that step already
    exists it is kept, unless `replace` (the epoch-end save of a step that also had a
    step-level save holds more: validation, best). A full disk or a read-only folder
    raises `CheckpointError`; the previous checkpoints stay as they were.
    """
    final = directory / f"step-{step:08d}"
    if final.exists() and _is_valid(final) and not replace:
        return final
    temporary = directory / f".tmp-{final.name}-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        _write_checkpoint_files(state, temporary)
        if final.exists():
            # Two renames, never a moment with a half-written step-N: a crash in between
            # leaves step-N absent, and loading falls back to the previous checkpoint.
            old = directory / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(temporary, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, final)
        fsync_directory(directory)
    except (OSError, SafetensorError) as error:  # safetensors reports ENOSPC as its own error
        shutil.rmtree(temporary, ignore_errors=True)
        reason = getattr(error, "strerror", None) or str(error).removeprefix(
            "Error while serializing: "
        )
        earlier = [p for p in list_checkpoints(directory) if p != final]
        then = (
            f"then continue with --resume {directory.parent} (earlier checkpoints are intact)"
            if earlier
            else "then run the same command again (no checkpoint had been saved yet)"
        )
        raise CheckpointError(
            f"cannot save checkpoint {final.name} in {directory}: {reason}; "
            f"free disk space or make the run folder writable, {then}"
        ) from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def point_alias(directory: Path, alias: str, checkpoint: Path) -> None:
    """Make `directory/alias` (e.g. `last`) a symlink to `checkpoint`, atomically."""
    link = directory / alias
    temporary = directory / f".{alias}.tmp-{os.getpid()}"
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    try:
        os.symlink(checkpoint.name, temporary)
        os.replace(temporary, link)
        fsync_directory(directory)
    except OSError as error:
        raise CheckpointError(
            f"cannot point {link} at {checkpoint.name}: {error.strerror or error}; "
            "free disk space or make the run folder writable"
        ) from None


def prune_checkpoints(directory: Path, keep_k: int) -> None:
    """Delete step folders beyond the newest `keep_k`, never one an alias points to."""
    protected = {(directory / a).resolve() for a in ALIASES if (directory / a).is_symlink()}
    steps = sorted(list_checkpoints(directory), reverse=True)
    for path in steps[keep_k:]:
        if path.resolve() not in protected:
            shutil.rmtree(path, ignore_errors=True)
    for leftover in [*directory.glob(".tmp-*"), *directory.glob(".old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def list_checkpoints(directory: Path) -> list[Path]:
    """Step folders in `directory`, oldest first (complete or not)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify and read a checkpoint folder back into the dict that was saved."""
    verify_checkpoint(path)
    tensors = load_tensors(path / TENSORS_FILE, map_location)
    model = load_tensors(path / MODEL_FILE, map_location)
    try:
        skeleton = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        state: dict[str, Any] = _decode(skeleton, tensors)
        state["model"] = model
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, KeyError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from None
    return state


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else, a pickle above all, is refused unread.

    A pickle (`torch.save`'s format) can run arbitrary code while it loads, so brickwork
    never unpickles: safetensors holds tensors and nothing else.
    """
    if _looks_like_pickle(path):
        raise CheckpointError(
            f"{path}: is a pickle (torch.save) file, which can run code when loaded; "
            "brickwork only reads safetensors: re-save the weights with "
            "safetensors.torch.save_file, or use a checkpoint brickwork wrote"
        )
    try:
        return load_file(path, device=str(map_location))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({error}); use a checkpoint brickwork wrote"
        ) from None


def _looks_like_pickle(path: Path) -> bool:
    """A raw pickle starts with the PROTO opcode; torch.save's zip files with `PK`."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check the manifest's sizes and checksums; return the manifest."""
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder")
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST_FILE}; the checkpoint is incomplete")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{manifest_path}: corrupt manifest") from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} is newer than this brickwork reads "
            f"({FORMAT_VERSION}); upgrade brickwork"
        )
    for name, expected in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected["size"]:
            raise CheckpointError(f"{file}: missing or truncated (expected {expected['size']} B)")
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(f"{file}: checksum mismatch; the file is corrupt")
    return dict(manifest)


def resolve_checkpoint(run_or_path: Path, which: str = "last") -> Path:
    """The checkpoint folder meant by a run folder plus `last`/`best`, or by a path.

    When the one named is corrupt, fall back to the newest complete checkpoint of
    the run and say so, instead of failing a resume.
    """
    path = Path(run_or_path)
    if (path / MANIFEST_FILE).exists() or _STEP_DIR.match(path.name):
        return path
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if which not in ALIASES:
        raise CheckpointError(f"--checkpoint {which}: expected last, best or a checkpoint path")
    alias = directory / which
    candidates: list[Path] = [alias.resolve()] if alias.is_symlink() else []
    candidates += sorted(list_checkpoints(directory), reverse=True)
    problems: list[str] = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if candidate != candidates[0]:
            log.warning(
                "checkpoint %s is unusable (%s); using %s instead",
                alias,
                problems[0],
                candidate.name,
            )
        return candidate
    if problems:
        raise CheckpointError(
            f"{path}: no usable checkpoint ({problems[0]}); "
            "start a new run, or restore the checkpoint from a backup"
        )
    if (path / "config.yaml").is_file():
        raise CheckpointError(
            f"{path}: the run saved no checkpoint (it stopped before its first save); "
            f"train it again with: brickwork train --resume {path}"
        )
    raise CheckpointError(
        f"{path}: no checkpoint found; pass a brickwork run folder (runs/<name>/<id>)"
    )


def _write_checkpoint_files(state: dict[str, Any], folder: Path) -> None:
    model_tensors = _unshared({k: v.detach().cpu() for k, v in state["model"].items()})
    save_file(model_tensors, str(folder / MODEL_FILE), metadata={"format": "pt"})
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode({k: v for k, v in state.items() if k != "model"}, tensors, "")
    save_file(_unshared(tensors), str(folder / TENSORS_FILE))
    (folder / STATE_FILE).write_text(json.dumps(skeleton), encoding="utf-8")
    files = [MODEL_FILE, TENSORS_FILE, STATE_FILE]
    for name in files:
        fsync_file(folder / name)
    manifest = {
        "format_version": FORMAT_VERSION,
        "files": {
            name: {"size": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
            for name in files
        },
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    fsync_file(folder / MANIFEST_FILE)
    fsync_directory(folder)


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """Replace tensors by references, keep JSON's own types, tag the rest."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, tensors, f"{path}/{k}") for k, v in value.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at '{path}' in a checkpoint")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def unshare_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies fit for safetensors, which refuses tensors that share memory
    (tied weights): the repeats are copied."""
    return _unshared({k: v.detach().cpu() for k, v in tensors.items()})


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen: set[tuple[int, object]] = set()
    out = {}
    for key, tensor in tensors.items():
        tensor = tensor.contiguous()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and ident in seen:
            tensor = tensor.clone()
        seen.add(ident)
        out[key] = tensor
    return out


def _is_valid(path: Path) -> bool:
    try:
        verify_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
