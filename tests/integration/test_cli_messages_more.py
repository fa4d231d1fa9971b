"""Messages a user meets around a finished or interrupted run, through `brickwork.cli.main`
in-process: a full disk during a resume names the file, the checkpoint-fallback warning
comes once, and the `data.on_bad_image: skip` that an error advises works on `predict`."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import pytest

from brickwork import fit
from brickwork.cli import main
from tests.mount import fill, tmpfs
from tests.resume import StopAtStep
from tests.unit.test_data_files import write_images


def test_a_full_disk_during_resume_names_the_file_it_could_not_write(
    tmp_path: Path, fast_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run_dir = disk / "run"
        fit(overrides=fast_overrides, run_dir=run_dir, callbacks=[StopAtStep(5)])
        fill(disk, leave_bytes=0)
        capsys.readouterr()
        code = main(["train", "--resume", str(run_dir)])
        lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    (line,) = [line for line in lines if "error:" in line]
    assert "No space left on device" in line
    assert f"cannot write {run_dir}/" in line  # the file, e.g. .../run/data.json


def test_the_checkpoint_fallback_warning_is_given_once(
    fast_overrides: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*fast_overrides, "checkpoint.every_n_steps=5", "checkpoint.keep_k=3"]
    fit(overrides=overrides, run_dir="run", callbacks=[StopAtStep(10)])
    last = Path("run/checkpoints/last").resolve()
    (last / "state.json").write_text("{}")  # corrupt: its manifest no longer matches
    with caplog.at_level(logging.WARNING, logger="brickwork"):
        assert main(["train", "--resume", "run", "trainer.max_steps=12"]) == 0
    fallbacks = [r for r in caplog.records if "is unusable" in r.getMessage()]
    assert len(fallbacks) == 1 and "using step-00000005 instead" in fallbacks[0].getMessage()


def test_predict_skips_bad_images_with_the_override_its_error_advises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_images(tmp_path / "pictures", {"apple": 4, "pear": 4})
    write_images(tmp_path / "new", {"x": 3})
    (tmp_path / "new" / "x" / "broken.jpg").write_bytes(b"not an image")
    data = {"name": "image_folder", "root": str(tmp_path / "pictures"), "image_size": 16}
    overrides = [
        "data=" + json.dumps({**data, "batch_size": 4}),
        "model.channels=[4,8]",
        "trainer.max_epochs=1",
        "trainer.test_after_fit=false",
        "loggers.progress_bar=false",
        "loggers.tensorboard.enabled=false",
    ]
    fit(None, overrides=overrides, run_dir="run")
    capsys.readouterr()
    args = ["predict", "run", "--input", str(tmp_path / "new"), "--output", "out.csv"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "broken.jpg: cannot decode image" in error and "data.on_bad_image: skip" in error
    assert not Path("out.csv").exists()
    assert main([*args, "data.on_bad_image=skip"]) == 0
    with open("out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["input"] for row in rows) == ["x/0.jpg", "x/1.png", "x/2.jpg"]
