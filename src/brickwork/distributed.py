"""Many processes, one run: the process group, ranks, and the reductions between them.

brickwork runs on PyTorch's own distributed engine. Each process is one rank; the
environment that `torchrun` (or SLURM's `srun`) sets up says which one:

    brickwork train CONFIG trainer.devices=4          # re-launches itself via torchrun
    torchrun --nproc-per-node=4 -m brickwork train CONFIG
    srun --ntasks=8 python -m brickwork train CONFIG  # needs MASTER_ADDR/MASTER_PORT

The config does not change between 1 and N processes: `data.batch_size` is per
process (or `data.global_batch_size` derives it), gradients are averaged by
DistributedDataParallel, validation is split across ranks without padding, and
losses and metrics are reduced so every rank sees the same numbers. Only rank 0
writes files or prints. In one process every helper here is a cheap no-op.

This module holds no training logic: each collective it offers is called at a line of
the loop or the checkpointer that says so. docs/distributed.md lists every one.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from brickwork.errors import ConfigError

if TYPE_CHECKING:
    from brickwork.config import TrainerConfig

log = logging.getLogger("brickwork")

# A gloo group for control traffic when the main group is NCCL (None: use the main group).
_control_group: Any = None


def env_world_size() -> int:
    """Processes in the job according to the environment (torchrun, or SLURM with srun)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return int(os.environ["SLURM_STEP_NUM_TASKS"]) if _under_srun() else 1


def is_distributed() -> bool:
    """Whether a process group is up (this process is one rank of several)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank, 0 in a single-process run."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the run, 1 in a single-process run."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, the one rank that prints and writes files.

    Example:
        >>> if brickwork.distributed.is_main_process():
        ...     print("only once, whatever the number of processes")
    """
    return get_rank() == 0


def local_rank() -> int:
    """This process's index on its machine (picks its GPU)."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


@contextlib.contextmanager
def distributed_session(trainer: TrainerConfig, device: torch.device) -> Iterator[None]:
    """Join the process group described by the environment for the body, then leave it.

    Does nothing in a single process, or when the caller already set up a process
    group (their own torchrun script calling `fit`): then the caller owns it.
    """
    if env_world_size() <= 1 or is_distributed():
        yield
        return
    _fill_env_from_slurm()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    timeout = datetime.timedelta(seconds=trainer.dist_timeout_s)
    dist.init_process_group(backend, timeout=timeout)
    global _control_group
    # Flags and small objects travel on CPU through gloo even when gradients use NCCL:
    # reading a CPU flag does not make the host wait for the GPU to finish the step.
    _control_group = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    finished = False
    try:
        yield
        finished = True
    except Exception as error:
        explained = explain_collective_error(error, trainer)
        if explained is error:
            raise
        raise explained from error
    finally:
        if finished:
            dist.barrier()  # nobody leaves while rank 0 may still be writing the run folder
        dist.destroy_process_group()
        _control_group = None


def explain_collective_error(error: Exception, trainer: TrainerConfig) -> Exception:
    """The same error with the rank and the likely fix in its message, where we know one."""
    text = str(error)
    if "find_unused_parameters" in text or "did not receive grad" in text:
        return ConfigError(
            f"rank {get_rank()}: DDP found parameters that took no part in the loss. "
            "Set trainer.find_unused_parameters=true (costs one extra graph traversal per "
            "step), or freeze those parameters (requires_grad=False)"
        )
    if "timed out" in text.lower() or "timeout" in text.lower():
        return RuntimeError(
            f"rank {get_rank()} of {get_world_size()}: a collective waited more than "
            f"trainer.dist_timeout_s={trainer.dist_timeout_s:g}s; another rank is stuck or "
            f"died (read its log). Original error: {text.splitlines()[0] if text else error!r}"
        )
    return error


def rank_device(device: torch.device) -> torch.device:
    """Each rank on a machine takes its own GPU (`cuda:LOCAL_RANK`), whatever index was set."""
    if device.type == "cuda" and env_world_size() > 1:
        return torch.device("cuda", local_rank())
    return device


def wrap_model(model: nn.Module, trainer: TrainerConfig, device: torch.device) -> nn.Module:
    """DistributedDataParallel across ranks, DataParallel for `strategy: dp`, else as is."""
    if trainer.strategy == "dp":
        return _data_parallel(model, trainer, device)
    sync_batchnorm = trainer.sync_batchnorm and device.type == "cuda"
    if trainer.sync_batchnorm and not sync_batchnorm:
        warnings.warn(
            f"trainer.sync_batchnorm=true is ignored on {device.type}: PyTorch's SyncBatchNorm "
            "runs on CUDA only, so each process keeps its own BatchNorm statistics",
            stacklevel=2,
        )
    if get_world_size() == 1:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=trainer.find_unused_parameters,
    )


def _data_parallel(model: nn.Module, trainer: TrainerConfig, device: torch.device) -> nn.Module:
    if device.type != "cuda" or get_world_size() > 1:
        raise ConfigError(
            f"trainer.strategy = 'dp' on {device.type} with {get_world_size()} process(es): "
            "DataParallel splits each batch over the GPUs of one process and needs CUDA; "
            "use trainer.strategy=ddp (the default, also on CPU)"
        )
    warnings.warn(
        "trainer.strategy=dp (torch.nn.DataParallel) is the legacy option: one Python "
        "process drives every GPU, so the GIL serialises the work, and GPU 0 gathers all "
        "outputs and holds the master weights (more memory and time on it). "
        "trainer.strategy=ddp with trainer.devices=N is faster",
        stacklevel=2,
    )
    return nn.DataParallel(model, device_ids=list(range(trainer.devices)))


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce for micro-steps before the last of a step.

    Looks through a `torch.compile` wrapper to the DDP module inside it.
    """
    if sync:  # most micro-steps: no attribute lookup (a failed one on a Module raises)
        return contextlib.nullcontext()
    inner = getattr(model, "_orig_mod", model)
    if not isinstance(inner, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return inner.no_sync()


def sum_across_ranks(*values: torch.Tensor | float) -> list[float]:
    """Sum scalars over ranks in one all_reduce; the `.tolist()` is a device sync."""
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    packed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if is_distributed():
        if dist.get_backend() == "nccl" and packed.device.type != "cuda":
            packed = packed.cuda()
        dist.all_reduce(packed)
    return [float(v) for v in packed.tolist()]


def max_across_ranks(value: int) -> int:
    """The largest `value` over ranks, on CPU through the control group (no GPU wait)."""
    if not is_distributed():
        return value
    flag = torch.tensor([value])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_control_group)
    return int(flag.item())


def min_across_ranks(value: float) -> float:
    """The smallest `value` over ranks, on CPU through the control group (no GPU wait)."""
    if not is_distributed():
        return value
    packed = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(packed, op=dist.ReduceOp.MIN, group=_control_group)
    return float(packed.item())


def mean_across_ranks(total: torch.Tensor | float | None, count: int) -> float:
    """Sum over ranks divided by the count over ranks (NaN when no rank counted anything).

    A collective in several processes and a device sync everywhere (`.tolist()`).
    """
    summed, num = sum_across_ranks(0.0 if total is None else total, float(count))
    return summed / num if num else math.nan


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (a list of one in a single process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, value, group=_control_group)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, group=_control_group)
    return holder[0]


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if is_distributed():
        dist.barrier()


def _under_srun() -> bool:
    """One task of an `srun` step with several tasks (not the batch script itself)."""
    return "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def _fill_env_from_slurm() -> None:
    """Translate SLURM's variables into the ones `init_process_group` reads."""
    if "RANK" in os.environ or not _under_srun():
        return
    if "MASTER_ADDR" not in os.environ:
        raise ConfigError(
            "running under srun with SLURM_NTASKS > 1 but MASTER_ADDR is not set; in the job "
            "script export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) "
            "and MASTER_PORT=29500, or launch with torchrun"
        )
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_STEP_NUM_TASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
