"""Random number generators: seeding them, and capturing their state for exact resume.

Python's `random`, NumPy's global generator and torch's (CPU and every CUDA device)
are the streams a training process draws from: dropout, augmentation, shuffling in
user code. A checkpoint holds all of them (`capture_rng`), so a resumed run draws
exactly the numbers the uninterrupted one would have.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from brickwork.distributed import get_rank

# Rank-0 seeds are the config's seed; rank r draws from seed + r * _RANK_SEED_STRIDE,
# so dropout masks and augmentations differ between ranks yet stay reproducible.
_RANK_SEED_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so two runs of one config match."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_rank(seed: int) -> None:
    """Give ranks > 0 their own random streams; rank 0 keeps the single-process stream.

    Called after the model is built, so every rank starts from identical weights.
    """
    rank = get_rank()
    if rank > 0:
        seed_everything(seed + rank * _RANK_SEED_STRIDE)


def capture_rng() -> dict[str, Any]:
    """The state of every random number generator the training process draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`: the next random draw equals the one the saved run made."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """`random.setstate` wants nested tuples; JSON gives back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value
