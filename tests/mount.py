"""Real full and read-only file systems for tests: small tmpfs mounts (root only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. `256k`) at `path`; skip the test where mounting is denied."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(path: Path, leave_bytes: int) -> None:
    """Write a filler file until at most `leave_bytes` of free space are left on `path`'s fs."""
    import os

    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with (path / "filler.bin").open("wb") as handle:
        try:
            handle.write(b"\0" * max(free - leave_bytes, 0))
            handle.flush()
        except OSError:
            pass
