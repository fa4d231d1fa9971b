"""What every resume test shares: a stop at a chosen point, and "the same state" as one check.

A resumed run is correct when its final checkpoint equals an uninterrupted run's:
weights, optimizer moments, schedule position, counters, random generators and the
callbacks' state, all bit for bit on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from brickwork.checkpoint import load_checkpoint, resolve_checkpoint
from brickwork.stop import StopKind


class StopAtStep:
    """Stop after optimizer step `step` (or at the end of epoch `epoch`), as a signal would.

    The default kind, PREEMPTED, saves a checkpoint at that step like a SIGTERM.
    """

    def __init__(
        self,
        step: int | None = None,
        *,
        epoch: int | None = None,
        kind: StopKind = StopKind.PREEMPTED,
    ) -> None:
        self.step, self.epoch, self.kind = step, epoch, kind

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if state.step == self.step:
            state.request_stop(self.kind, f"test stop at step {self.step}")

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        if self.epoch is not None and state.epoch == self.epoch:
            state.request_stop(self.kind, f"test stop after epoch {self.epoch}")


def final_state(run_or_checkpoint: Path) -> dict[str, Any]:
    """The checkpoint a run folder's `last` points to (or the checkpoint folder given)."""
    return load_checkpoint(resolve_checkpoint(run_or_checkpoint))


def assert_same_state(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    """Two checkpoints hold the same training state, bit for bit."""
    assert expected["counters"] == actual["counters"]
    assert expected["model"].keys() == actual["model"].keys()
    for key, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][key]), key
    moments, got = expected["optimizer"]["state"], actual["optimizer"]["state"]
    assert moments.keys() == got.keys()
    for index, entry in moments.items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(got[index][name])), (
                index,
                name,
            )
    assert expected["optimizer"]["param_groups"] == actual["optimizer"]["param_groups"]
    assert expected["scheduler"] == actual["scheduler"]
    assert torch.equal(expected["rng"]["torch"], actual["rng"]["torch"])
    assert expected["rng"]["python"] == actual["rng"]["python"]
    assert expected["callbacks"] == actual["callbacks"] or _same_callbacks(expected, actual)


def _same_callbacks(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Callbacks' state, except the checkpointer's own bookkeeping of the file it wrote."""
    drop = {"metrics_file"}  # byte counts match only when both runs logged the same rows
    left = {k: v for k, v in expected["callbacks"].items() if k not in drop}
    right = {k: v for k, v in actual["callbacks"].items() if k not in drop}
    return left == right
