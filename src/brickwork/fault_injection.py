"""Fault injection: a real `torch.OutOfMemoryError` where a test asks for one.

Out-of-memory recovery (`brickwork.memory`) must be testable without a GPU, so an
environment variable (a test hook, not a config key) names the places to fail:
`STEPS:MICRO_STEP[:forward|backward][,RANK]` for training, `eval:N[-LAST][,RANK]`
for evaluation forwards, entries separated by `;`. The syntax with examples is in
`brickwork.memory` and docs/troubleshooting.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from brickwork.distributed import get_rank
from brickwork.errors import BrickworkError

INJECT_VARIABLE = "BRICKWORK_INJECT_OOM"

PHASES = ("forward", "backward")
_ENTRY = re.compile(
    r"(?P<first>\d+)(?:-(?P<last>\d+)(?:/(?P<every>\d+))?)?:(?P<micro>-?\d+)"
    r"(?::(?P<phase>forward|backward))?(?:,(?P<rank>\d+))?"
)
_EVAL_ENTRY = re.compile(r"eval:(?P<first>\d+)(?:-(?P<last>\d+))?(?:,(?P<rank>\d+))?")


@dataclass(frozen=True)
class _Injection:
    where: str  # "train" or "eval"
    step: int  # training: the optimizer step, from 1; eval: the evaluation forward, from 0
    micro_step: int  # -1: the last micro-step of the attempt
    rank: int | None
    phase: str = "forward"


def parse_injections(text: str) -> list[_Injection]:
    """`STEPS:MICRO_STEP[:PHASE][,RANK]` or `eval:N[,RANK]` entries, separated by `;` or
    spaces; STEPS is `N`, `FIRST-LAST` or `FIRST-LAST/EVERY`."""
    found = []
    for entry in text.replace(";", " ").split():
        if match := _EVAL_ENTRY.fullmatch(entry):
            rank = int(match["rank"]) if match["rank"] else None
            first = int(match["first"])
            for index in range(first, int(match["last"] or first) + 1):
                found.append(_Injection("eval", index, 0, rank))
            continue
        match = _ENTRY.fullmatch(entry)
        if match is None:
            raise BrickworkError(
                f"{INJECT_VARIABLE}={text!r}: cannot read {entry!r}; expected "
                "STEPS:MICRO_STEP[:forward|backward][,RANK] or eval:N[-LAST][,RANK], "
                "e.g. 3:0, 3:-1:backward,1 or 2-20/2:0"
            )
        first = int(match["first"])
        last = int(match["last"]) if match["last"] else first
        every = int(match["every"]) if match["every"] else 1
        rank = int(match["rank"]) if match["rank"] else None
        phase = match["phase"] or "forward"
        for step in range(first, last + 1, max(every, 1)):
            found.append(_Injection("train", step, int(match["micro"]), rank, phase))
    return found


class FaultInjection:
    """Raises a real `torch.OutOfMemoryError` where `BRICKWORK_INJECT_OOM` says, once each.

    A `forward` entry raises as its micro-step starts; a `backward` one arms a hook
    that raises in the middle of that micro-step's backward (`install`).
    """

    def __init__(self, text: str | None = None) -> None:
        text = os.environ.get(INJECT_VARIABLE, "") if text is None else text
        self.pending = parse_injections(text)
        self.num_eval_forwards = 0
        self.backward_armed = False
        self.num_raised = 0

    def __bool__(self) -> bool:
        return bool(self.pending)

    def maybe_raise(
        self, where: str, step: int, micro_step: int = 0, num_micro_steps: int = 1
    ) -> None:
        """Raise (or arm the backward hook) for the first pending entry at this place."""
        for entry in self.pending:
            micro = entry.micro_step % num_micro_steps if entry.micro_step < 0 else entry.micro_step
            if (entry.where, entry.step, micro) == (where, step, micro_step) and (
                entry.rank is None or entry.rank == get_rank()
            ):
                self.pending.remove(entry)
                if entry.phase == "backward":
                    self.backward_armed = True
                    return
                self._raise(f"{where} {step}:{micro_step}")

    def install(self, model: torch.nn.Module) -> None:
        """A forward hook on a module halfway down `model` whose output's gradient hook
        raises when armed: the backward fails after some parameters got their gradient."""
        if not any(entry.phase == "backward" for entry in self.pending):
            return
        layers = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        if layers:
            layers[(len(layers) - 1) // 2].register_forward_hook(self._arm_output)

    def _arm_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.backward_armed and isinstance(output, torch.Tensor) and output.requires_grad:
            self.backward_armed = False
            output.register_hook(self._raise_in_backward)

    def _raise_in_backward(self, grad: torch.Tensor) -> None:
        self._raise("backward")

    def _raise(self, where: str) -> None:
        self.num_raised += 1
        raise torch.OutOfMemoryError(
            f"CUDA out of memory (injected by {INJECT_VARIABLE} at {where} on rank {get_rank()})"
        )
