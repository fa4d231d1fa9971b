"""A full disk or a read-only folder during a save: one clear line, earlier checkpoints intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.checkpoint import list_checkpoints, verify_checkpoint
from brickwork.loop import fit
from tests.conftest import run_cli
from tests.integration.test_resume_config import tree_digest
from tests.integration.test_resume_exact import StopAtStep
from tests.mount import fill, remount_read_only, tmpfs


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        fit(overrides=fast_overrides, run_dir=run_dir, callbacks=[StopAtStep(5)])
        before = tree_digest(run_dir / "checkpoints")
        fill(disk, leave_bytes=16 * 1024)
        result = run_cli(["train", "--resume", str(run_dir), "checkpoint.every_n_steps=1"])
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert "No space left on device" in lines[0] and "--resume" in lines[0]
        assert tree_digest(run_dir / "checkpoints") == before  # nothing lost, nothing half-new
        for folder in list_checkpoints(run_dir / "checkpoints"):
            verify_checkpoint(folder)
        (disk / "filler.bin").unlink()
        again = run_cli(["train", "--resume", str(run_dir), "trainer.max_steps=7"])
        assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_read_only_run_folder_is_one_line_and_untouched(
    tmp_path: Path, fast_overrides: list[str]
) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        fit(overrides=fast_overrides, run_dir=run_dir, callbacks=[StopAtStep(5)])
        before = tree_digest(run_dir)
        remount_read_only(disk)
        result = run_cli(["train", "--resume", str(run_dir)])
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Read-only file system" in result.stderr
        assert tree_digest(run_dir) == before
