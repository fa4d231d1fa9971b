"""Learning-rate schedules have the shape their names promise; clipping clips what it says."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from brickwork.loop import clip_gradients
from brickwork.optim import Horizon, build_optimizer, build_scheduler

HORIZON = Horizon(steps_per_epoch=10, total_steps=100)


def _lrs(name: str, kwargs: dict, num_calls: int, interval_metric: float | None = None) -> list:
    params = [nn.Parameter(torch.zeros(2))]
    optimizer = build_optimizer("sgd", params, {"lr": 1.0})
    schedule = build_scheduler(name, optimizer, HORIZON, kwargs)
    lrs = []
    for _ in range(num_calls):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if interval_metric is None:
            schedule.scheduler.step()  # type: ignore[call-arg]
        else:
            schedule.scheduler.step(interval_metric)  # type: ignore[arg-type]
    return lrs


def test_cosine_warms_up_linearly_then_decays_to_the_floor() -> None:
    lrs = _lrs("cosine", {"warmup_steps": 10, "min_lr_ratio": 0.1}, 101)
    warmup = lrs[:11]
    assert all(b > a for a, b in itertools.pairwise(warmup))  # rising
    assert warmup[0] == pytest.approx(1 / 11) and lrs[10] == pytest.approx(1.0)
    decay = lrs[10:]
    assert all(b <= a for a, b in itertools.pairwise(decay))  # never rising again
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-6)  # halfway down the cosine
    assert lrs[100] == pytest.approx(0.1)  # the floor, min_lr_ratio x lr


def test_step_decay_multiplies_by_gamma_every_step_size_epochs() -> None:
    lrs = _lrs("step", {"step_size": 3, "gamma": 0.5}, 9)  # one call per epoch
    assert lrs == pytest.approx([1.0] * 3 + [0.5] * 3 + [0.25] * 3)


def test_onecycle_rises_to_its_peak_at_pct_start_then_falls_far_below_the_start() -> None:
    lrs = _lrs("onecycle", {"max_lr": 2.0, "pct_start": 0.3}, 100)
    peak = max(range(100), key=lambda i: lrs[i])
    assert abs(peak - 30) <= 1 and lrs[peak] == pytest.approx(2.0, rel=1e-3)
    assert lrs[0] == pytest.approx(2.0 / 25)  # div_factor
    assert lrs[-1] < lrs[0] / 100  # final_div_factor takes it far below the start


def test_reduce_on_plateau_cuts_the_lr_after_patience_bad_validations() -> None:
    lrs = _lrs("reduce_on_plateau", {"patience": 1, "factor": 0.5}, 6, interval_metric=1.0)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 0.25])


def _model_with_gradients() -> nn.Module:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.grad = torch.tensor([[3.0, -4.0, 0.0, 0.0]] * 3)
        model.bias.grad = torch.tensor([0.5, -0.2, 12.0])
    return model


def _total_norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))


def test_norm_clipping_scales_the_whole_gradient_to_the_limit_keeping_its_direction() -> None:
    model = _model_with_gradients()
    before = torch.cat([p.grad.flatten().clone() for p in model.parameters()])
    clip_gradients(model, 1.0, "norm")
    after = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert _total_norm(model) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(after, before / before.norm())  # same direction


def test_value_clipping_caps_each_element_and_leaves_small_ones_alone() -> None:
    model = _model_with_gradients()
    clip_gradients(model, 1.0, "value")
    assert model.weight.grad.tolist() == [[1.0, -1.0, 0.0, 0.0]] * 3
    torch.testing.assert_close(model.bias.grad, torch.tensor([0.5, -0.2, 1.0]))
    assert _total_norm(model) > 1.0  # unlike norm clipping, the total is not the limit
