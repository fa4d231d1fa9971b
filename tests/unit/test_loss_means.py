"""The logged training loss: step losses kept unfolded until a mean is read, and saved so.

A step only appends its losses; the loop folds them into the interval and epoch means
at logging steps and epoch ends. A checkpoint taken in between must carry the unfolded
ones, or a resumed run would log a different mean than an uninterrupted one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brickwork.state import TrainState, UnfoldedLosses


def _state() -> TrainState:
    model = nn.Linear(2, 1)
    return TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1))


def _steps(count: int, seed: int = 0) -> list[list[tuple[torch.Tensor, int]]]:
    """`count` steps of two micro-steps each, losses of assorted sizes, shapes and dtypes."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for index in range(count):
        values = torch.rand(2, generator=generator) * 3
        first = values[0].half() if index % 3 == 0 else values[0]  # an fp16 loss (autocast)
        second = values[1].reshape(1)  # a loss of shape (1,), as some models return
        steps.append([(first, 32), (second, 7 + index)])
    return steps


def test_a_fold_is_the_losses_weighted_by_their_samples() -> None:
    unfolded = UnfoldedLosses()
    steps = _steps(5)
    for losses in steps:
        unfolded.extend(losses)
    total, count = unfolded.take_sum()
    pairs = [pair for losses in steps for pair in losses]
    assert count == sum(n for _, n in pairs)
    expected = sum(float(loss) * n for loss, n in pairs)
    assert total is not None and abs(float(total) - expected) < 1e-4 * expected
    assert unfolded.take_sum() == (None, 0)  # taken: nothing is added twice


def test_a_checkpoint_between_folds_resumes_to_the_same_mean_bit_for_bit() -> None:
    steps = _steps(9)
    straight = _state()
    for index, losses in enumerate(steps, 1):
        straight.unfolded_loss.extend(losses)
        if index % 4 == 0:  # a logging step
            straight.fold_losses()
    straight.fold_losses()  # the epoch's end

    interrupted = _state()
    for index, losses in enumerate(steps[:6], 1):
        interrupted.unfolded_loss.extend(losses)
        if index % 4 == 0:
            interrupted.fold_losses()
    saved = interrupted.state_dict()  # step 6: steps 5 and 6 are still unfolded
    assert saved["meters"]["unfolded_loss"]["counts"] == [32, 11, 32, 12]
    resumed = _state()
    resumed.load_state_dict(saved)
    for index, losses in enumerate(steps[6:], 7):
        resumed.unfolded_loss.extend(losses)
        if index % 4 == 0:
            resumed.fold_losses()
    resumed.fold_losses()

    for name in ("interval_loss", "epoch_loss"):
        expected, got = getattr(straight, name), getattr(resumed, name)
        assert expected.count == got.count
        assert torch.equal(expected.total, got.total), name


def test_a_checkpoint_from_before_unfolded_losses_loads_with_none() -> None:
    state = _state()
    saved = state.state_dict()
    saved["meters"] = {  # as brickwork wrote them before: only the two means
        "interval_loss": {"total": torch.tensor(6.0), "count": 3},
        "epoch_loss": {"total": torch.tensor(10.0), "count": 5},
    }
    state.unfolded_loss.extend([(torch.tensor(1.0), 1)])
    state.load_state_dict(saved)
    assert state.unfolded_loss.take_sum() == (None, 0)
    assert state.interval_loss.totals() == (torch.tensor(6.0), 3)


def test_resuming_on_fewer_processes_folds_every_saved_ranks_losses_on_rank_0() -> None:
    # Saved by two processes, loaded by one: rank 0 takes both ranks' means and losses.
    state = _state()
    saved = state.state_dict()
    rank_meters = []
    for rank in range(2):
        other = _state()
        other.unfolded_loss.extend([(torch.tensor(1.0 + rank), 4), (torch.tensor(3.0), 2)])
        other.interval_loss.add_sum(torch.tensor(10.0 * (rank + 1)), 5)
        rank_meters.append(other.rank_local_state()["meters"])
    saved["meters_per_rank"] = rank_meters
    state.load_state_dict(saved)
    state.fold_losses()
    total, count = state.interval_loss.totals()
    # Means: 10 + 20 over 10 samples; unfolded: 1*4 + 3*2 + 2*4 + 3*2 over 12 samples.
    assert count == 22
    assert total is not None and float(total) == 30.0 + 24.0


def test_a_long_logging_interval_folds_at_a_bound_and_still_resumes_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No logging step for a long while: pending losses stay bounded (each holds memory).
    monkeypatch.setattr(UnfoldedLosses, "MAX_UNFOLDED", 6)
    steps = _steps(8)  # two losses a step: the bound is reached after steps 3 and 6
    straight = _state()
    for losses in steps:
        straight.keep_losses(losses)
    assert len(straight.unfolded_loss.losses) == 4
    assert straight.interval_loss.count == sum(n for losses in steps[:6] for _, n in losses)

    interrupted = _state()
    for losses in steps[:4]:
        interrupted.keep_losses(losses)
    resumed = _state()
    resumed.load_state_dict(interrupted.state_dict())
    for losses in steps[4:]:
        resumed.keep_losses(losses)
    straight.fold_losses()
    resumed.fold_losses()
    assert torch.equal(straight.epoch_loss.total, resumed.epoch_loss.total)
