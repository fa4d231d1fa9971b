"""brickwork: config-driven PyTorch training with an explicit, readable loop.

The few names a user meets:

    from brickwork import fit, predict, evaluate, load_config, register, TrainState, Callback

Attributes load on first use, so `import brickwork` (and `brickwork --help`) does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brickwork.version import __version__

_EXPORTS = {
    "fit": "brickwork.loop",
    "predict": "brickwork.inference",
    "evaluate": "brickwork.inference",
    "inspect_model": "brickwork.inspection",
    "StopKind": "brickwork.stop",
    "Logger": "brickwork.loggers",
    "evaluate_loader": "brickwork.loop",
    "Config": "brickwork.config",
    "load_config": "brickwork.config",
    "register": "brickwork.registry",
    "TrainState": "brickwork.state",
    "Callback": "brickwork.callbacks",
    "DataBundle": "brickwork.data.bundle",
    "save_checkpoint": "brickwork.checkpoint",
    "load_checkpoint": "brickwork.checkpoint",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from brickwork.callbacks import Callback
    from brickwork.checkpoint import load_checkpoint, save_checkpoint
    from brickwork.config import Config, load_config
    from brickwork.data.bundle import DataBundle
    from brickwork.inference import evaluate, predict
    from brickwork.inspection import inspect_model
    from brickwork.loggers import Logger
    from brickwork.loop import evaluate_loader, fit
    from brickwork.registry import register
    from brickwork.state import TrainState
    from brickwork.stop import StopKind


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'brickwork' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
