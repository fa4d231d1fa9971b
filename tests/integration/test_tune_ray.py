"""`brickwork tune --engine ray`: a real local Ray, inside a loopback-only network namespace.

Run by `make test-ray` (`unshare -n`, then `ip link set lo up`); skipped anywhere a
non-loopback interface exists, so Ray can never reach the network from a test.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from brickwork.loop import fit
from brickwork.tune.ray_trial import hash_folder
from brickwork.tune.trial import TrialReporter
from tests.conftest import run_cli
from tests.resume import assert_same_state, final_state

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
# How a trial's run folder may end once its study is over; never `failed` for a trial
# Ray's scheduler paused or stopped, never `preempted` once nothing will resume it.
SETTLED = {"completed", "pruned"}
EPOCHS_2 = ["trainer.max_epochs=2"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Ray head started as docs/tune.md tells a user (`ray start --head`), with token
    auth, usage statistics off and its files in tmp; the studies below join it with
    `--address`, so they share its start-up. `--block` keeps the head under one process
    we started: stopping that process stops the head (`ray stop` would stop every Ray on
    the machine, other people's included)."""
    home = tmp_path_factory.mktemp("home")
    temp_dir = Path(tempfile.mkdtemp(prefix="bw-rt-"))  # short: Ray's unix socket paths
    port = _free_port()
    env = {
        "HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    ray = str(Path(sys.executable).parent / "ray")
    command = [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    command += ["--port", str(port), "--num-cpus", "2", "--include-dashboard", "false"]
    command += ["--disable-usage-stats", "--temp-dir", str(temp_dir)]
    with (temp_dir / "head.log").open("w") as log:
        head = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, head, temp_dir / "head.log")
        yield {**env, "address": f"127.0.0.1:{port}"}
    finally:
        head.send_signal(signal.SIGTERM)  # the blocking `ray start` stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever is left of that one session
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_port(port: int, head: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited {head.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the Ray head did not listen on 127.0.0.1:{port}: {log.read_text()[-2000:]}")


def _join(cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The environment a study on the cluster needs (its token, its home), and the flag."""
    for key, value in cluster.items():
        if key != "address":
            monkeypatch.setenv(key, value)
    return ["--address", cluster["address"]]


def _tune(space_text: str, args: list[str], tmp_path: Path) -> list[dict[str, str]]:
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    result = run_cli(
        ["tune", "--engine", "ray", "--space", str(space), "--study-dir", "s", *args, *TINY],
        timeout_s=400,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with (Path("s") / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def _summaries() -> dict[Path, dict[str, Any]]:
    return {
        run: json.loads((run / "summary.json").read_text()) for run in Path("s/trials").iterdir()
    }


def test_ray_asha_study_with_optunas_tpe_on_a_local_ray_completes_in_the_study_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # whatever Ray writes to the home folder lands here
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(key, raising=False)  # brickwork makes its own for a local Ray
    short_folders = set(Path(tempfile.gettempdir()).glob("bw-ray-*"))
    rows = _tune(
        "optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}\n",
        ["--trials", "3", "--pruner", "asha", "--sampler", "tpe", "--workers", "2", *EPOCHS_2],
        tmp_path,
    )
    # The short folder a local Ray uses when the study path is too long for its sockets
    # is gone with Ray.
    assert set(Path(tempfile.gettempdir()).glob("bw-ray-*")) <= short_folders
    assert not Path("s/ray-temp-dir.txt").exists()
    assert json.loads(Path("s/study.json").read_text())["sampler"] == "tpe"  # OptunaSearch
    assert len(rows) == 3 and rows[0]["state"] == "complete"
    assert all(1.0e-3 <= float(r["optimizer.lr"]) <= 3.0e-2 for r in rows)
    assert all(Path(r["run_dir"]).resolve().parent == Path("s/trials").resolve() for r in rows)
    assert {s["status"] for s in _summaries().values()} <= SETTLED  # an ASHA stop is pruned
    assert (Path("s") / "best.yaml").is_file()
    assert list(home.iterdir()) == []  # nothing in the home folder (the auth token included)


def test_pbt_on_a_joined_cluster_exploits_and_records_the_donor_checkpoint_and_hash(
    tmp_path: Path, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hopeless and a good learning rate (a grid of two), 2 CPUs each on a 2-CPU
    cluster: one trial runs at a time, PBT pauses each at every epoch (10 steps) for the
    other, so at its second report the hopeless one is behind a trial with a checkpoint
    and exploits it, whatever the timing."""
    rows = _tune(
        "optimizer.lr: {choice: [1.0e-5, 3.0e-2]}\n",
        [
            *_join(cluster, monkeypatch),
            "--resources-per-trial",
            "cpu=2",
            "--sampler",
            "grid",
            "--pruner",
            "pbt",
            "--perturbation-interval-steps",
            "10",
            *EPOCHS_2,
        ],
        tmp_path,
    )
    assert len(rows) == 2
    records = [
        (path.parent, json.loads(line))
        for path in Path("s/trials").glob("*/exploits.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert records, "PBT never exploited"
    for receiver, record in records:
        donor = Path(record["donor_run_dir"])
        assert donor != receiver.resolve() and donor.parent == receiver.parent.resolve()
        assert record["checkpoint"].startswith("step-") and len(record["sha256"]) == 64
        assert "resumed from " + record["copied_to"] in (receiver / "train.log").read_text()
    # Each recorded hash is that of a checkpoint the donor handed to Ray (PBT keeps them
    # all); the receiver's copy may since have been re-saved under its own config. Two
    # trials can hand Ray the same bytes: a receiver whose perturbed rate is the donor's
    # trains on from the donor's checkpoint exactly as the donor did.
    handed: dict[str, set[tuple[str, str]]] = {}
    for pointer in Path("s/ray/results").glob("*/checkpoint_*/brickwork.json"):
        sent = json.loads(pointer.read_text())
        folder = pointer.parent / sent["checkpoint"]
        handed.setdefault(sent["sha256"], set()).add((sent["run_dir"], hash_folder(folder)))
    for _, record in records:
        assert (record["donor_run_dir"], record["sha256"]) in handed[record["sha256"]]
    summaries = _summaries()
    assert {s["status"] for s in summaries.values()} == {"completed"}  # none left paused
    for run in summaries:
        assert json.loads((run / "ray.json").read_text())["resources"] == {"CPU": 2.0}
        trained = yaml.safe_load((run / "config.yaml").read_text())["optimizer"]
        assert trained["lr"] in (1.0e-5, 3.0e-2)  # a choice stays a choice
    assert list(Path(cluster["HOME"]).iterdir()) == []  # joining wrote nothing at home


def test_bohb_pauses_trials_records_them_preempted_and_resumes_them_exactly(
    tmp_path: Path, cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _tune(
        "optimizer.lr: {loguniform: [1.0e-3, 3.0e-2]}\n",
        [
            *_join(cluster, monkeypatch),
            "--sampler",
            "bohb",
            "--pruner",
            "hyperband",
            "--trials",
            "3",
            "trainer.max_epochs=3",
        ],
        tmp_path,
    )
    summaries = _summaries()
    assert {s["status"] for s in summaries.values()} <= SETTLED
    resumed = [run for run in summaries if "resumed from" in (run / "train.log").read_text()]
    assert resumed, "HyperBandForBOHB paused no trial"
    run = resumed[0]
    # While paused, the run folder said so (the summary the pause wrote, kept in the log).
    assert "preempted: paused by Ray Tune's scheduler" in (run / "train.log").read_text()
    straight = Path("straight")
    fit(run / "config.yaml", run_dir=straight, callbacks=[TrialReporter("val/acc", "max")])
    assert_same_state(final_state(straight), final_state(run))
