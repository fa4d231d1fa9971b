"""The pieces of out-of-memory recovery that need no training run to be checked."""

from __future__ import annotations

import pytest
import torch

from brickwork.errors import BrickworkError
from brickwork.fault_injection import FaultInjection
from brickwork.memory import OutOfMemoryRecovery, split_into_pieces
from brickwork.memory_profile import PhasePeaks


def test_a_batch_is_cut_into_pieces_of_the_given_size_whatever_its_shape() -> None:
    batch = {
        "input": torch.arange(10).view(5, 2),
        "target": torch.arange(5),
        "names": list("abcde"),
    }
    pieces = split_into_pieces(batch, 2)
    assert [p["target"].tolist() for p in pieces] == [[0, 1], [2, 3], [4]]
    assert [p["names"] for p in pieces] == [["a", "b"], ["c", "d"], ["e"]]
    assert torch.equal(torch.cat([p["input"] for p in pieces]), batch["input"])
    inputs, targets = torch.zeros(4, 3), torch.ones(4)
    assert [len(x) for x, _ in split_into_pieces((inputs, targets), 3)] == [3, 1]
    assert split_into_pieces((inputs, targets), 8) == [(inputs, targets)]  # uncut


def test_injection_raises_a_real_out_of_memory_error_once_per_entry() -> None:
    injection = FaultInjection("2:1;2:1")
    injection.maybe_raise("train", 2, 0)  # not here
    for _ in range(2):
        with pytest.raises(torch.OutOfMemoryError):
            injection.maybe_raise("train", 2, 1)
    injection.maybe_raise("train", 2, 1)  # both entries used up
    FaultInjection("1:0,1").maybe_raise("train", 1, 0)  # rank 1 only: this is rank 0


def test_injection_entries_cover_step_ranges_phases_and_the_last_micro_step() -> None:
    injection = FaultInjection("2-6/2:-1:backward,1;eval:3-4")
    places = [(e.where, e.step, e.micro_step, e.phase, e.rank) for e in injection.pending]
    assert places == [
        ("train", 2, -1, "backward", 1),
        ("train", 4, -1, "backward", 1),
        ("train", 6, -1, "backward", 1),
        ("eval", 3, 0, "forward", None),
        ("eval", 4, 0, "forward", None),
    ]
    last = FaultInjection("3:-1")
    last.maybe_raise("train", 3, 0, num_micro_steps=2)  # micro-step 0 of 2: not the last
    with pytest.raises(torch.OutOfMemoryError):
        last.maybe_raise("train", 3, 1, num_micro_steps=2)


@pytest.mark.parametrize("text", ["3", "a:b", "eval:x", "1:0,r", "1:0:sideways"])
def test_a_malformed_injection_names_the_variable_and_the_format(text: str) -> None:
    with pytest.raises(BrickworkError, match=r"BRICKWORK_INJECT_OOM=.*STEPS:MICRO_STEP"):
        FaultInjection(text)


def test_halving_keeps_the_loader_batches_and_stops_at_one_sample(tmp_path) -> None:  # type: ignore[no-untyped-def]
    recovery = OutOfMemoryRecovery(3, torch.device("cpu"), tmp_path, FaultInjection("1:0"))
    recovery.halve(1, 0, "forward")  # 3 -> 2
    batches = [torch.arange(3), torch.arange(3, 6)]
    assert [p.tolist() for p in recovery.cut(batches)] == [[0, 1], [2], [3, 4], [5]]
    recovery.halve(1, 0, "forward")  # 2 -> 1
    with pytest.raises(BrickworkError, match=r"micro-batch of 1 sample.*bf16"):
        recovery.halve(1, 0, "forward")
    assert "failed in forward" in (tmp_path / "oom_report.txt").read_text()
    assert recovery.state_dict()["micro_batch_size"] == 1


def test_phase_peaks_on_the_cpu_measure_each_phase_from_the_tensors_sizes() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 4)
    )
    optimizer = torch.optim.Adam(model.parameters())
    phases = PhasePeaks(torch.device("cpu"))
    phases.attach(model, optimizer)
    assert phases.describe() == ["  not measured"]  # nothing before a first error
    phases.start_profile()
    inputs = torch.randn(64, 256)
    with phases.profiled():
        model(inputs).square().mean().backward()
    optimizer.step()
    with phases.profiled("evaluation"), torch.no_grad():
        model(inputs)
    lines = dict(line.strip().split(": ", 1) for line in phases.describe())
    mib = {name: float(text.split()[0]) for name, text in lines.items()}
    # The forward keeps its 64 x 1024 activations (256 KiB, twice: Linear and ReLU).
    assert mib["forward"] >= 2 * 64 * 1024 * 4 / 2**20
    # The backward creates the gradients: at least the first layer's 1 MiB weight.
    assert mib["loss and backward"] >= 256 * 1024 * 4 / 2**20
    assert mib["evaluation"] > 0
    # Measured on the CPU from the sizes of the parameters, gradients and Adam's state.
    parameters = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    assert mib["parameters"] == pytest.approx(parameters, abs=0.01)
    assert mib["optimizer state"] == pytest.approx(2 * parameters, abs=0.01)
    assert "tensor profile" in lines["forward"]
