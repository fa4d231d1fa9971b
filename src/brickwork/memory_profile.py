"""Memory measured while training: meters, and the peak of each phase of a step.

Two meters give the same two figures, bytes of tensors alive now and the most alive at
once: `CudaMemoryMeter` reads CUDA's caching allocator, `TensorMemoryMeter` is a
memory profile built from the tensors' sizes (CPU, which keeps no statistics).
`PhasePeaks` splits a step into forward, loss and backward, optimizer step and
evaluation, and keeps each one's peak, for the out-of-memory report
(`brickwork.memory`) and `brickwork doctor`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

PHASES = ("forward", "loss and backward", "optimizer step", "evaluation")
_NOTHING = contextlib.nullcontext()  # reusable: what `profiled` enters when not profiling


class TensorMemoryMeter(TorchDispatchMode):
    """Bytes of tensor storage alive now, and the most alive at once since `reset_peak`.

    A dispatch mode sees each operation's outputs; a weak reference per storage tells
    when it was freed. Costs a Python call per operation: used for a few steps only.
    """

    def __init__(self) -> None:
        super().__init__()
        self._storages: dict[int, tuple[StorageWeakRef, int]] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.collect()
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        self.peak = max(self.peak, self.live)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            return
        key, size = storage.data_ptr(), storage.nbytes()
        if size and key not in self._storages:
            self._storages[key] = (StorageWeakRef(storage), size)
            self.live += size

    def collect(self) -> None:
        """Forget storages that were freed."""
        dead = [key for key, (ref, _) in self._storages.items() if ref.expired()]
        for key in dead:
            self.live -= self._storages.pop(key)[1]

    def current(self) -> int:
        self.collect()
        return self.live

    def reset_peak(self) -> None:
        self.peak = self.current()


class CudaMemoryMeter:
    """The same two figures from CUDA's caching allocator (every tensor on the device)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current(self) -> int:
        return int(torch.cuda.memory_allocated(self.device))

    @property
    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device))

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)


class PhasePeaks:
    """The peak memory of each phase of training, for the out-of-memory report.

    Measuring starts with `start_profile`, at the first out-of-memory error: the figures
    are those of the attempts that lead to the report, and a run without an error
    pays nothing (the hooks return at once) and keeps CUDA's peak statistics to itself
    (`brickwork doctor` reads them). On CUDA the allocator's peak is read and reset at
    each phase boundary (two counter reads, no device sync). On the CPU, where memory is
    not counted, a tensor memory profile runs around each attempt (a Python call per
    operation), and the optimizer step is counted from the sizes of what it touches.

    Example:
        >>> phases = PhasePeaks(torch.device("cuda"))
        >>> phases.attach(model, optimizer)
        >>> phases.start_profile()  # at the first out-of-memory error
        >>> phases.describe()
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.meter: Any = None
        self.peaks: dict[str, int] = {}
        self.phase: str | None = None
        self.static: dict[str, int] = {}
        self._model: torch.nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Phase boundaries from hooks: a training forward starts and ends; a step starts."""
        self._model, self._optimizer = model, optimizer
        model.register_forward_pre_hook(self._before_forward)
        model.register_forward_hook(self._after_forward)
        optimizer.register_step_pre_hook(self._before_step)
        optimizer.register_step_post_hook(self._after_step)

    def start_profile(self) -> None:
        """Measure from now on (after an out-of-memory error)."""
        if self.meter is None:
            cuda = self.device.type == "cuda"
            self.meter = CudaMemoryMeter(self.device) if cuda else TensorMemoryMeter()
            self.meter.reset_peak()

    def profiled(self, phase: str | None = None) -> contextlib.AbstractContextManager[Any]:
        """The tensor profile around a block (CPU), and the phase it starts in.

        Entered around every training step: without a CPU profile running it is a
        shared no-op context, not a generator-based one (a few microseconds a step).
        """
        if phase is not None:
            self.enter(phase)
        if isinstance(self.meter, TensorMemoryMeter):
            return self.meter
        return _NOTHING

    def enter(self, phase: str | None) -> None:
        """Close the current phase (keep its peak) and start `phase`."""
        if self.meter is None:
            return
        if self.phase is not None:
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), int(self.meter.peak))
        self.meter.reset_peak()
        self.phase = phase

    def describe(self) -> list[str]:
        """One line per phase, largest first, and the weights, gradients and state."""
        self.enter(self.phase)  # the phase in progress (the one that failed) counts too
        self._count_static()
        if self.meter is None:
            return ["  not measured"]
        kind = "CUDA allocator" if isinstance(self.meter, CudaMemoryMeter) else "tensor profile"
        lines = [
            f"  {phase}: {_mib(self.peaks[phase])} ({kind})"
            for phase in sorted(self.peaks, key=self.peaks.__getitem__, reverse=True)
        ]
        if "optimizer step" not in self.peaks and self.static:
            touched = sum(self.static.values())
            lines.append(f"  optimizer step: {_mib(touched)} (parameters, gradients, state)")
        lines += [f"  {name}: {_mib(size)}" for name, size in self.static.items()]
        return lines

    def _count_static(self) -> None:
        if self._model is None or self._optimizer is None:
            return
        parameters = [p for p in self._model.parameters() if p.requires_grad]
        state = [
            value
            for entry in self._optimizer.state.values()
            for value in entry.values()
            if isinstance(value, torch.Tensor)
        ]
        self.static = {
            "parameters": sum(_nbytes(p) for p in parameters),
            "gradients (at most)": sum(_nbytes(p) for p in parameters),
            "optimizer state": sum(_nbytes(t) for t in state),
        }

    def _before_forward(self, module: torch.nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():  # training; evaluation runs under no_grad
            self.enter("forward")

    def _after_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self.enter("loss and backward")

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.enter("optimizer step")

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.enter(None)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB"
