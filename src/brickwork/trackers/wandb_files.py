"""Read W&B's local transaction log (`run-<id>.wandb`) without W&B's service.

W&B writes every run, online or offline, to a `.wandb` file in the run's folder
under `<run folder>/wandb/`: a LevelDB-style log of protobuf `Record`s. A resumed
brickwork run reads these files to learn which (metric, step) pairs its W&B run
already holds; tests read them to check what was logged.

Format: a 7-byte header (`:W&B`, a 2-byte magic, a version byte), then records in
32 KiB blocks, each chunk `crc32c (4) | length (2, little-endian) | type (1) | data`,
type 1 a whole record, 2/3/4 the first/middle/last piece of a record split across
blocks. A cut-off tail (a killed writer) ends the scan quietly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HEADER = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_record_bytes(path: Path) -> Iterator[bytes]:
    """Each serialized record of a `.wandb` file, in write order."""
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        return
    offset, pending = _HEADER, b""
    while offset + _CHUNK_HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _CHUNK_HEADER:  # the block's tail is padding
            offset += room
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        start = offset + _CHUNK_HEADER
        if kind == 0 or start + length > len(data):
            return  # zero padding or a record cut short by a kill
        chunk = data[start : start + length]
        offset = start + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history rows (`wandb.log` calls) of one `.wandb` file, as plain dicts."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in iter_record_bytes(path):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
        try:
            record.ParseFromString(raw)
        except Exception:  # a damaged record: what follows may still be readable
            continue
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def run_files(wandb_dir: Path, run_id: str) -> list[Path]:
    """Every attempt's `.wandb` file of W&B run `run_id`, oldest first."""
    files = wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb")
    return sorted(files, key=lambda p: (p.parent.name.split("-")[-2], p.stat().st_mtime))
