"""`brickwork tune --engine ray`: a real local Ray, inside a loopback-only network namespace.

Run by `make test-ray` (`unshare -n`, then `ip link set lo up`); skipped anywhere a
non-loopback interface exists, so Ray can never reach the network from a test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.ray


def _loopback_only() -> bool:
    """This process's network namespace has no interface but lo (/proc/net/dev is per
    namespace; /sys/class/net is not remounted by `unshare -n`)."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return False
    return {line.split(":")[0].strip() for line in lines} <= {"lo"}


if not _loopback_only():
    pytest.skip(
        "starts Ray: run inside a loopback-only network namespace (make test-ray)",
        allow_module_level=True,
    )

TINY = [
    "model.name=mlp",
    "model.hidden_sizes=[16]",
    "data.batch_size=128",
    "scheduler=null",
    "early_stopping=null",
    "trainer.test_after_fit=false",
    "loggers.tensorboard.enabled=false",
    "loggers.progress_bar=false",
]


def test_ray_asha_study_on_two_cpus_completes_and_writes_the_study_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}\n")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # whatever Ray writes to the home folder lands here
    result = run_cli(
        [
            "tune",
            "--engine",
            "ray",
            "--space",
            str(space),
            "--trials",
            "3",
            "--pruner",
            "asha",
            "--sampler",
            "random",
            "--workers",
            "2",
            "--study-dir",
            "s",
            "trainer.max_epochs=2",
            *TINY,
        ],
        timeout_s=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with (Path("s") / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and rows[0]["state"] == "complete"
    assert all(Path(r["run_dir"]).parent == Path("s/trials").resolve() for r in rows)
    assert (Path("s") / "best.yaml").is_file()
    assert list(home.iterdir()) == []  # nothing in the home folder (the auth token included)
