"""`trainer.compile`: the training model wrapped with `torch.compile`, and its failures.

Only the module the loop trains through is compiled. Evaluation, checkpoints and
export use the user's plain module (`parts.model`; `unwrap_model` looks through the
`_orig_mod` wrapper), so checkpoint keys carry no `_orig_mod.` prefix and a compiled
run's checkpoints load anywhere. Compilation happens at the first forward: a failure
surfaces there, and `fit` turns it into one line with the way out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from brickwork.config import CompileConfig
from brickwork.errors import ConfigError


def compile_model(model: nn.Module, options: CompileConfig) -> nn.Module:
    """`model` wrapped with `torch.compile` as `options` say; `model` itself when off.

    Example:
        >>> compiled = compile_model(model, CompileConfig(enabled=True, mode="max-autotune"))
    """
    if not options.enabled:
        return model
    compiled: Any = torch.compile(
        model, mode=options.mode, dynamic=options.dynamic, backend=options.backend
    )
    return compiled


def is_compile_error(error: BaseException) -> bool:
    """Whether `error` came from torch.compile (dynamo tracing or the backend compiler)."""
    modules = (cls.__module__ for cls in type(error).__mro__)
    return any(m.startswith(("torch._dynamo", "torch._inductor")) for m in modules)


def explain_compile_error(error: BaseException) -> ConfigError:
    """One line: what failed, and `trainer.compile=false` as the way out."""
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return ConfigError(
        f"trainer.compile: torch.compile failed ({type(error).__name__}: {first.strip()[:300]}); "
        "set trainer.compile=false to train without it, or trainer.compile.backend=eager to "
        "find the failing code"
    )
