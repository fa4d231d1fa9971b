"""`brickwork runs`, `runs diff`, `board` and `report` on real run folders, as a user runs them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from brickwork.loop import fit
from tests.conftest import FAST, run_cli, run_cli_in_process

pytestmark = pytest.mark.slow

ONE_EPOCH = [*FAST[:-1], "trainer.max_epochs=1", "loggers.tensorboard.graph=false"]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished runs that differ in the learning rate, and a study of three trials."""
    root = tmp_path_factory.mktemp("project") / "runs"
    fit(None, overrides=[*ONE_EPOCH, "optimizer.lr=0.003"], run_dir=root / "digits" / "a")
    fit(None, overrides=[*ONE_EPOCH, "optimizer.lr=0.02"], run_dir=root / "digits" / "b")
    study = root / "study"
    for index, lr in enumerate((0.001, 0.01, 0.03)):
        trial = study / f"trial-{index:04d}"
        fit(
            None,
            overrides=[*ONE_EPOCH, f"optimizer.lr={lr}", "loggers.tensorboard.enabled=false"],
            run_dir=trial,
        )
    (study / "trials.csv").write_text("whatever the tuner writes at the top\n")
    return root


def test_runs_table_lists_status_best_and_the_hyperparameters_that_differ(runs_root: Path) -> None:
    result = run_cli(["runs", str(runs_root / "digits")])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "status" in line)
    assert "optimizer.lr" in header and "best" in header and "trainer.max_epochs" not in header
    assert sum("completed" in line for line in lines) == 2
    assert any("0.02" in line for line in lines) and any("0.003" in line for line in lines)


def test_runs_filter_sort_limit_and_json(runs_root: Path) -> None:
    result = run_cli(
        [
            "runs",
            str(runs_root),
            "--json",
            "--filter",
            "status=completed",
            "optimizer.lr<0.01",
            "--sort",
            "optimizer.lr",
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["config"]["optimizer.lr"] for r in rows] == [0.001, 0.003]
    limited = json.loads(
        run_cli(["runs", str(runs_root), "--json", "--sort=-optimizer.lr", "--limit", "2"]).stdout
    )
    assert [r["config"]["optimizer.lr"] for r in limited] == [0.03, 0.02]


def test_runs_bad_filter_is_one_line_naming_the_filter_and_the_fix(runs_root: Path) -> None:
    result = run_cli(["runs", str(runs_root), "--filter", "optimizer.lr"])
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "'optimizer.lr'" in result.stderr
        and "status=completed" in result.stderr
    )


def test_runs_diff_shows_config_and_metric_differences_side_by_side(runs_root: Path) -> None:
    a, b = runs_root / "digits" / "a", runs_root / "digits" / "b"
    result = run_cli(["runs", "diff", str(a), str(b), "--json"])
    assert result.returncode == 0, result.stderr
    differences = json.loads(result.stdout)
    assert differences["config"] == [["optimizer.lr", 0.003, 0.02]]
    metrics = {key: (left, right) for key, left, right in differences["metrics"]}
    summary_a = json.loads((a / "summary.json").read_text())
    assert metrics["val/loss"][0] == summary_a["final"]["val/loss"]
    table = run_cli(["runs", "diff", str(a), str(b)])
    assert "optimizer.lr" in table.stdout and "val/acc" in table.stdout


def test_a_killed_run_shows_as_crashed_not_running(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brickwork",
            "train",
            *FAST,
            "trainer.max_epochs=50",
            "--run-dir",
            str(run_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "heartbeat.json").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    listed = json.loads(run_cli(["runs", str(tmp_path / "runs"), "--json"]).stdout)
    assert [r["status"] for r in listed] == ["running"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    listed = json.loads(run_cli(["runs", str(tmp_path / "runs"), "--json"]).stdout)
    assert [r["status"] for r in listed] == ["crashed"]


def test_board_serves_tensorboard_on_loopback_and_stops_on_ctrl_c(runs_root: Path) -> None:
    from brickwork.cli.board import free_port

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "brickwork",
            "board",
            str(runs_root / "digits"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runs = _get_json(f"http://127.0.0.1:{port}/data/runs", process)
        assert {"a/tb", "b/tb"} <= set(runs)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status == 200 and b"<html" in page.read(2000).lower()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/" in stdout and "Traceback" not in stderr


def _get_json(url: str, process: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                runs = json.loads(response.read())
                if runs:
                    return list(runs)
        except OSError:
            pass
        assert time.monotonic() < deadline, "TensorBoard did not answer"
        time.sleep(0.3)


def test_report_renders_in_chromium_with_every_figure_loaded(
    runs_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "report.html"
    result = run_cli_in_process(
        [
            "report",
            str(runs_root / "digits" / "a"),
            str(runs_root / "digits" / "b"),
            "--output",
            str(output),
        ]
    )
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    assert page.count("data:image/png;base64,") >= 9  # 3 curves + 2 x (matrix, per-class, grid)
    figures = {p.name for p in (tmp_path / "out" / "report-figures").glob("*.png")}
    assert {
        "loss.png",
        "lr.png",
        "val-metrics.png",
        "confusion.png",
        "per-class.png",
        "wrong.png",
    } <= figures
    assert "optimizer" in page and "&quot;status&quot;: &quot;completed&quot;" in page
    _assert_renders(output, tmp_path)


def test_report_of_a_study_folder_shows_its_trials_table_and_plots(
    runs_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "study.html"
    result = run_cli_in_process(["report", str(runs_root / "study"), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    assert "3 trials" in page
    for trial in ("trial-0000", "trial-0001", "trial-0002"):
        assert f"<td>{trial}</td>" in page
    figures = {p.name for p in (tmp_path / "study-figures").glob("*.png")}
    assert {"trials.png", "param-optimizer-lr.png", "trial-curves.png", "confusion.png"} <= figures
    _assert_renders(output, tmp_path)


def test_report_refuses_to_overwrite_a_file_it_did_not_write(
    runs_root: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    result = run_cli_in_process(["report", str(runs_root / "digits" / "a"), "--output", str(mine)])
    assert result.returncode == 2 and "notes.html" in result.stderr and "--output" in result.stderr
    assert mine.read_text() == "<p>my notes</p>"


def _assert_renders(output: Path, tmp_path: Path) -> None:
    """Headless Chromium draws the page: not blank, the size asked for, no broken image."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed here (.ci/run installs Debian's chromium)")
    from PIL import Image, ImageStat

    shot = tmp_path / "shot.png"
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,1600", output.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 1600)
    assert ImageStat.Stat(image).stddev[0] > 10  # text and plots, not a blank page
    dom = subprocess.run(
        [*base, "--virtual-time-budget=5000", "--dump-dom", output.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    loaded = dom.split('data-images-loaded="', 1)[1].split('"', 1)[0]
    done, total = (int(n) for n in loaded.split("/"))
    assert total >= 4 and done == total, loaded
