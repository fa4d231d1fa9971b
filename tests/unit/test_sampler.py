"""The resumable sampler: order from (seed, epoch), start anywhere, split across ranks."""

from __future__ import annotations

import pytest

from brickwork.data.sampler import ResumableSampler


def test_order_depends_only_on_seed_and_epoch() -> None:
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_starting_mid_epoch_yields_the_rest_of_the_same_order() -> None:
    sampler = ResumableSampler(40, seed=0)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.set_epoch(1, start_index=17)
    assert list(sampler) == full[17:]
    assert len(sampler) == 23


def test_ranks_partition_an_epoch_without_padding() -> None:
    ranks = [ResumableSampler(10, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(0)
    seen = [i for sampler in ranks for i in sampler]
    assert sorted(seen) == list(range(10))  # each sample once: nothing repeated
    assert [len(s) for s in ranks] == [4, 3, 3]


def _batches(sampler: ResumableSampler) -> list[list[int]]:
    order, size = list(sampler), sampler.batch_size
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("num_replicas", [2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_each_global_batch_holds_the_samples_of_one_process_batch(
    num_replicas: int, drop_last: bool
) -> None:
    # 103 samples in global batches of 32: divisible by neither 2, 3, 5 nor 32.
    one = ResumableSampler(103, seed=4, batch_total=32, drop_last=drop_last)
    ranks = [
        ResumableSampler(
            103, seed=4, num_replicas=num_replicas, rank=r, batch_total=32, drop_last=drop_last
        )
        for r in range(num_replicas)
    ]
    expected = _batches(one)
    per_rank = [_batches(sampler) for sampler in ranks]
    assert one.num_batches == len(expected) == (3 if drop_last else 4)
    for k, batch in enumerate(expected):
        shares = [batches[k] if k < len(batches) else [] for batches in per_rank]
        assert sorted(i for share in shares for i in share) == sorted(batch)
        assert ranks[0].step_samples(k, 1) == len(batch)  # known without a collective
    assert sum(len(s) for s in ranks) == len(one)
    assert all(s.num_batches == one.num_batches for s in ranks)


def test_a_rank_can_hold_no_sample_of_the_last_global_batch() -> None:
    # 97 = 3 x 32 + 1: the last global batch has one sample, on rank 0 only.
    ranks = [ResumableSampler(97, seed=0, num_replicas=3, rank=r, batch_total=32) for r in range(3)]
    assert [s.batch_size for s in ranks] == [11, 11, 10]
    assert [len(_batches(s)) for s in ranks] == [4, 3, 3]
    assert ranks[2].num_batches == 4 and ranks[2].step_samples(3, 1) == 1


def test_no_shuffle_keeps_dataset_order() -> None:
    sampler = ResumableSampler(5, shuffle=False)
    assert list(sampler) == [0, 1, 2, 3, 4]
