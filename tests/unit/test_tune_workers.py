"""`brickwork tune --workers N` shares the machine's cores between its N workers."""

from __future__ import annotations

import os

import pytest
import torch

from brickwork.tune.search import _share_cores


@pytest.fixture
def threads_restored(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def test_each_of_n_workers_trains_on_its_share_of_the_cores(
    threads_restored: pytest.MonkeyPatch,
) -> None:
    share = max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(share + 1)
    _share_cores(2)
    assert os.environ["OMP_NUM_THREADS"] == str(share)  # what the started workers inherit
    assert torch.get_num_threads() == share


def test_a_users_thread_count_and_a_single_worker_are_left_alone(
    threads_restored: pytest.MonkeyPatch,
) -> None:
    torch.set_num_threads(3)
    _share_cores(1)
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == 3
    threads_restored.setenv("OMP_NUM_THREADS", "5")
    _share_cores(4)
    assert os.environ["OMP_NUM_THREADS"] == "5" and torch.get_num_threads() == 3
