"""Distributed helpers that need no second process: batch arithmetic, splits, errors."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.distributed as dist
from torch import nn

from brickwork.cli.launch import should_launch
from brickwork.components import describe_batch, resolve_batch_sizes
from brickwork.config import load_config
from brickwork.data.sampler import ResumableSampler
from brickwork.distributed import (
    env_world_size,
    explain_collective_error,
    get_rank,
    get_world_size,
    is_main_process,
    sum_across_ranks,
    wrap_model,
)
from brickwork.errors import ConfigError


def config(*overrides: str):  # type: ignore[no-untyped-def]
    return load_config(None, list(overrides))


def test_global_batch_size_derives_per_process_batch_and_accumulation() -> None:
    resolved = resolve_batch_sizes(config("data.global_batch_size=96", "data.batch_size=16"), 2)
    assert (resolved.data.batch_size, resolved.trainer.accumulate_grad_batches) == (16, 3)
    assert describe_batch(resolved, 2) == (
        "global batch 96 = 2 process(es) x 16 per process x 3 accumulated micro-batch(es)"
    )
    small = resolve_batch_sizes(config("data.global_batch_size=32", "data.batch_size=64"), 4)
    assert (small.data.batch_size, small.trainer.accumulate_grad_batches) == (8, 1)


def test_global_batch_size_accumulates_in_even_micro_batches() -> None:
    # 40 per rank, at most 16 per micro-batch: 3 would not divide 40, so 4 of 10.
    resolved = resolve_batch_sizes(config("data.global_batch_size=80", "data.batch_size=16"), 2)
    assert (resolved.data.batch_size, resolved.trainer.accumulate_grad_batches) == (10, 4)


def test_global_batch_size_that_processes_cannot_share_evenly_differs_by_one_sample() -> None:
    resolved = resolve_batch_sizes(config("data.global_batch_size=32", "data.batch_size=32"), 3)
    assert (resolved.data.batch_size, resolved.trainer.accumulate_grad_batches) == (11, 1)
    assert "global batch 32 = 3 process(es) x 10-11 per process" in describe_batch(resolved, 3)
    resolved = resolve_batch_sizes(config("data.global_batch_size=32", "data.batch_size=6"), 3)
    assert (resolved.data.batch_size, resolved.trainer.accumulate_grad_batches) == (6, 2)


def test_global_batch_size_that_processes_cannot_share_says_how_to_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"global_batch_size = 2: smaller than the 3 .*at least 3"
    ):
        resolve_batch_sizes(config("data.global_batch_size=2"), 3)
    with pytest.raises(ConfigError, match=r"global_batch_size = 5 on 3 .*raise data.batch_size"):
        resolve_batch_sizes(config("data.global_batch_size=5", "data.batch_size=1"), 3)
    with pytest.raises(ConfigError, match=r"accumulate_grad_batches = 2.*drop one"):
        resolve_batch_sizes(
            config("data.global_batch_size=32", "trainer.accumulate_grad_batches=2"), 1
        )


def test_evaluation_split_counts_every_sample_once() -> None:
    ranks = [ResumableSampler(11, shuffle=False, num_replicas=4, rank=r) for r in range(4)]
    shares = [list(sampler) for sampler in ranks]
    assert sorted(i for share in shares for i in share) == list(range(11))
    assert [len(sampler) for sampler in ranks] == [3, 3, 3, 2]


def test_training_split_repeats_no_sample_and_agrees_on_the_number_of_batches() -> None:
    ranks = [ResumableSampler(11, seed=3, num_replicas=4, rank=r, batch_total=8) for r in range(4)]
    assert sorted(i for sampler in ranks for i in sampler) == list(range(11))
    assert {sampler.num_batches for sampler in ranks} == {2}


def test_helpers_are_no_ops_in_one_process() -> None:
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    assert sum_across_ranks(torch.tensor(2.5), 4.0) == [2.5, 4.0]
    model = nn.Linear(2, 2)
    assert wrap_model(model, config().trainer, torch.device("cpu")) is model


def test_devices_launch_only_outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert should_launch(config("trainer.devices=2").trainer)
    assert not should_launch(config("trainer.devices=1").trainer)
    assert not should_launch(config("trainer.devices=2", "trainer.strategy=dp").trainer)
    monkeypatch.setenv("WORLD_SIZE", "2")  # already a rank started by torchrun
    assert env_world_size() == 2
    assert not should_launch(config("trainer.devices=2").trainer)


def test_srun_without_master_addr_says_what_to_export(monkeypatch: pytest.MonkeyPatch) -> None:
    from brickwork.distributed import _fill_env_from_slurm

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    assert env_world_size() == 4
    with pytest.raises(ConfigError, match="export MASTER_ADDR="):
        _fill_env_from_slurm()


def test_dp_strategy_without_cuda_is_a_clear_error() -> None:
    trainer = config("trainer.strategy=dp").trainer
    with pytest.raises(ConfigError, match=r"needs CUDA; use trainer\.strategy=ddp"):
        wrap_model(nn.Linear(2, 2), trainer, torch.device("cpu"))


def test_sync_batchnorm_without_cuda_warns_and_keeps_batchnorm() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    trainer = config("trainer.sync_batchnorm=true").trainer
    with pytest.warns(UserWarning, match="sync_batchnorm=true is ignored on cpu"):
        wrapped = wrap_model(model, trainer, torch.device("cpu"))
    assert isinstance(wrapped[1], nn.BatchNorm2d)


class _HalfUsed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(2, 1), nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_unused_parameters_error_gets_the_config_hint() -> None:
    # A real one-rank gloo group: DDP reports unused parameters at the next step.
    store = dist.HashStore()
    dist.init_process_group(
        "gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=10)
    )
    try:
        model = nn.parallel.DistributedDataParallel(_HalfUsed())
        with pytest.raises(RuntimeError) as caught:
            for _ in range(2):
                model(torch.ones(4, 2)).sum().backward()
        explained = explain_collective_error(caught.value, config().trainer)
    finally:
        dist.destroy_process_group()
    assert isinstance(explained, ConfigError)
    assert "trainer.find_unused_parameters=true" in str(explained)
