"""`brickwork doctor` on real configs: healthy runs pass, each planted problem is named.

The problems are the ones that cost days: a callback that keeps each step's loss with
its graph (memory grows every step), a branch of the model never used (parameters
without gradients), NaN in the inputs, a batch too large for the memory there is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brickwork.doctor import run_doctor
from tests.conftest import run_cli, run_cli_in_process

SMALL = ["model.channels=[8,16]"]

LEAKY_CALLBACK = """
import torch
import torch.nn.functional as F
from brickwork.registry import register


@register("callback", "loss_keeper")
class LossKeeper:
    '''Tracks the loss on a fixed batch after each step, keeping the tensor.'''

    def __init__(self):
        self.losses = []
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(32, 1, 8, 8, generator=generator)
        self.targets = torch.randint(0, 10, (32,), generator=generator)

    def on_step_end(self, state, logs):
        loss = F.cross_entropy(state.model(self.inputs), self.targets)
        self.losses.append(loss)  # the leak: should be loss.item()
"""

UNUSED_BRANCH = """
from torch import nn
from brickwork.registry import register


@register("model", "two_branch")
class TwoBranch(nn.Module):
    def __init__(self, num_classes, input_shape):
        super().__init__()
        size = 1
        for dim in input_shape:
            size *= dim
        self.used = nn.Linear(size, num_classes)
        self.unused = nn.Linear(size, num_classes)  # built, never called

    def forward(self, x):
        return self.used(x.flatten(1))
"""

NAN_DATA = """
import torch
from torch.utils.data import TensorDataset
from brickwork.data import DataBundle
from brickwork.registry import register


@register("dataset", "nan_blobs")
def nan_blobs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(128, 4, generator=generator)
    inputs[::7, 2] = float("nan")  # missing values read as NaN
    targets = torch.randint(0, 3, (128,), generator=generator)
    return DataBundle(TensorDataset(inputs, targets), TensorDataset(inputs[:32], targets[:32]),
                      num_classes=3, input_shape=(4,), train_targets=targets)
"""


def write_project(tmp_path: Path, module: str, config: str) -> Path:
    (tmp_path / "project.py").write_text(module)
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return path


@pytest.mark.slow
def test_doctor_passes_the_default_config_and_writes_doctor_json(tmp_path: Path) -> None:
    result = run_cli(["doctor", *SMALL])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for section in ("environment", "preflight", "speed", "memory", "leaks"):
        assert f"\n{section}\n" in f"\n{result.stdout}"
    assert "no GPU" in result.stdout or "GPU 0" in result.stdout
    assert "compute-bound" in result.stdout or "input-bound" in result.stdout
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["healthy"] is True
    names = {check["name"] for check in report["checks"]}
    assert {"versions", "cpus", "disk", "batch", "labels", "loss", "gradients"} <= names
    assert {"verdict", "static", "activations", "growth"} <= names
    growth = next(check for check in report["checks"] if check["name"] == "growth")
    assert growth["status"] == "ok" and abs(growth["data"]["growth_bytes_per_step"]) < 1024
    assert not (tmp_path / "runs").exists()  # the probes train in a scratch folder


@pytest.mark.slow
def test_a_callback_keeping_each_loss_with_its_graph_is_reported_as_a_leak(
    tmp_path: Path,
) -> None:
    config = write_project(
        tmp_path,
        LEAKY_CALLBACK,
        "imports: [project.py]\nmodel: {name: cnn, channels: [8, 16]}\n"
        "callbacks: [{name: loss_keeper}]\n",
    )
    report = run_doctor(config, num_steps=6)
    leak = report.find("growth")
    assert leak is not None and leak.status == "fail"
    assert leak.data["growth_bytes_per_step"] > 10 * 1024  # the graph's activations
    assert "KiB per step" in leak.message and "LossKeeper.losses" in leak.message
    assert ".item()" in (leak.fix or "") and ".detach()" in (leak.fix or "")
    assert not report.healthy  # the same config without the callback: the test above


def test_parameters_of_a_branch_never_used_are_named(tmp_path: Path) -> None:
    config = write_project(
        tmp_path, UNUSED_BRANCH, "imports: [project.py]\nmodel: {name: two_branch}\n"
    )
    report = run_doctor(config, num_steps=4)
    gradients = report.find("gradients")
    assert gradients is not None and gradients.status == "fail"
    assert gradients.data["missing"] == ["unused.weight", "unused.bias"]
    assert "unused.weight" in gradients.message and "freeze" in (gradients.fix or "")
    assert report.find("verdict") is not None  # a failed preflight check still lets it run


def test_nan_in_the_inputs_is_a_failed_check_with_its_fix(tmp_path: Path) -> None:
    config = write_project(
        tmp_path,
        NAN_DATA,
        "imports: [project.py]\ndata: {name: nan_blobs, batch_size: 32}\n"
        "model: {name: mlp}\nmetrics: [accuracy]\n",
    )
    report = run_doctor(config)
    finite = report.find("inputs_finite")
    assert finite is not None and finite.status == "fail"
    assert "NaN" in finite.message and "clean the data" in (finite.fix or "")


@pytest.mark.slow
def test_batch_size_search_finds_the_largest_batch_under_the_budget(tmp_path: Path) -> None:
    budget = 2 * 2**20
    report = run_doctor(
        None,
        [*SMALL, "data.batch_size=256"],
        find_batch_size=True,
        memory_budget_bytes=budget,
    )
    found = report.find("batch_size")
    assert found is not None and found.status == "ok", found
    trials, largest = found.data["trials"], found.data["largest"]
    allowed = budget * 0.9
    fitting = [t for t in trials if t["fits"]]
    assert max(t["batch_size"] for t in fitting) == largest
    assert all(t["peak_bytes"] <= allowed for t in fitting)
    assert all(t["peak_bytes"] > allowed for t in trials if t["batch_size"] > largest)
    assert any(t["batch_size"] > largest for t in trials)  # it found the edge, not the cap
    size, accumulate = (int(o.split("=")[1]) for o in found.data["overrides"])
    assert size <= largest < 256 and size * accumulate == 256  # the same effective batch


@pytest.mark.slow
def test_doctor_command_line_mistakes_are_one_line(tmp_path: Path) -> None:
    result = run_cli_in_process(["doctor", "--find-batch-size", "--memory-budget", "2XB"])
    assert result.returncode == 2 and "2GiB" in result.stderr and "Traceback" not in result.stderr
    result = run_cli_in_process(["doctor", "trainer.max_epoch=3"])
    assert result.returncode == 1  # a failed check, reported like the others
    assert "FAIL" in result.stdout and "trainer.max_epochs" in result.stdout  # did you mean
    assert json.loads((tmp_path / "doctor.json").read_text())["healthy"] is False
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "doctor.json").write_text("my own notes\n")
    result = run_cli_in_process(["doctor"], cwd=mine)
    assert result.returncode == 2 and "not written by brickwork doctor" in result.stderr
    assert (mine / "doctor.json").read_text() == "my own notes\n"  # never overwritten


@pytest.mark.parametrize(
    ("text", "expected"), [("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20), ("1.5GB", 1.5e9)]
)
def test_memory_sizes_read_as_bytes(text: str, expected: float) -> None:
    from brickwork.doctor.batch_size import parse_memory_size

    assert parse_memory_size(text) == int(expected)


def test_a_model_with_the_wrong_number_of_outputs_fails_preflight_with_its_fix() -> None:
    report = run_doctor(None, ["model.name=mlp", "model.num_classes=3"])
    forward = report.find("forward")
    assert forward is not None and forward.status == "fail"
    assert "Target" in forward.message and "model.num_classes" in (forward.fix or "")
    assert report.find("verdict") is None  # no training steps on a broken step


@pytest.mark.slow
def test_batch_size_search_under_two_processes_runs_ddp_trials_agreed_by_both(
    tmp_path: Path,
) -> None:
    # `trainer.devices=2` re-launches the doctor through torchrun: every trial is a real
    # 2-process DDP run (steps, validation, a checkpoint), each rank measures its own
    # peak, and both agree on each verdict. 512 per process does not fit in 2 MiB less
    # 10% on the CPU's tensor profile; the overrides keep the effective batch of 512.
    budget = 2 * 2**20
    command = ["doctor", "--find-batch-size", "--memory-budget", "2MiB", "trainer.devices=2"]
    result = run_cli([*command, "model.name=mlp", "data.batch_size=512"], timeout_s=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("largest batch that fits") == 1  # rank 0 alone prints
    report = json.loads((tmp_path / "doctor.json").read_text())
    found = next(c for c in report["checks"] if c["name"] == "batch_size")
    trials, largest = found["data"]["trials"], found["data"]["largest"]
    assert found["data"]["world_size"] == 2 and {t["world_size"] for t in trials} == {2}
    assert "agreed by 2 processes" in found["message"]
    assert all(t["peak_bytes"] <= budget * 0.9 for t in trials if t["fits"])
    assert all(not t["fits"] for t in trials if t["batch_size"] > largest)
    assert trials[0]["batch_size"] == 512 and not trials[0]["fits"]  # it found the edge
    size, accumulate = (int(o.split("=")[1]) for o in found["data"]["overrides"])
    assert size <= largest < 512 and size * accumulate == 512  # the same effective batch
