"""The pieces of out-of-memory recovery that need no training run to be checked."""

from __future__ import annotations

import pytest
import torch

from brickwork.errors import BrickworkError
from brickwork.memory import FaultInjection, OutOfMemoryRecovery, split_into_pieces


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


@pytest.mark.parametrize("text", ["3", "a:b", "eval:x", "1:0,r"])
def test_a_malformed_injection_names_the_variable_and_the_format(text: str) -> None:
    with pytest.raises(BrickworkError, match=r"BRICKWORK_INJECT_OOM=.*STEPS:MICRO_STEP"):
        FaultInjection(text)


def test_halving_keeps_the_loader_batches_and_stops_at_one_sample(tmp_path) -> None:  # type: ignore[no-untyped-def]
    recovery = OutOfMemoryRecovery(3, torch.device("cpu"), tmp_path, FaultInjection("1:0"))
    error = torch.OutOfMemoryError("test")
    recovery.halve(1, 0, "forward")  # 3 -> 2
    batches = [torch.arange(3), torch.arange(3, 6)]
    assert [p.tolist() for p in recovery.cut(batches)] == [[0, 1], [2], [3, 4], [5]]
    recovery.halve(1, 0, "forward")  # 2 -> 1
    with pytest.raises(BrickworkError, match=r"micro-batch of 1 sample.*bf16"):
        recovery.halve(1, 0, "forward")
    assert "failed in forward" in (tmp_path / "oom_report.txt").read_text()
    assert recovery.state_dict()["micro_batch_size"] == 1
