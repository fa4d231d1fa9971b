"""The resumable sampler: order from (seed, epoch), start anywhere, split across ranks."""

from __future__ import annotations

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


def test_ranks_partition_an_epoch_like_distributed_sampler() -> None:
    ranks = [ResumableSampler(10, seed=1, num_replicas=3, rank=r) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(0)
    seen = [i for sampler in ranks for i in sampler]
    assert len(seen) == 12  # padded to a multiple of 3 by wrapping
    assert set(seen) == set(range(10))
    assert all(len(s) == 4 for s in ranks)


def test_no_shuffle_keeps_dataset_order() -> None:
    sampler = ResumableSampler(5, shuffle=False)
    assert list(sampler) == [0, 1, 2, 3, 4]
