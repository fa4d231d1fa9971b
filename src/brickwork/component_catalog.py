"""What `brickwork ls` shows: the registered components of a kind, with their arguments.

Arguments and defaults are read from each factory's signature (`inspect.signature`),
the same signature a config is checked against, so the listing cannot disagree with
what a config accepts. Arguments that brickwork fills in itself (the data's
`num_classes`, the optimizer's parameters, ...) are marked as such. The zoo names
(`timm/<name>`, `torchvision/<name>`) are listed only for a `--filter` pattern: there
are more than a thousand.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from brickwork import registry

# `brickwork ls models` and `brickwork ls model` both work.
KIND_NAMES = (
    {f"{kind}s": kind for kind in registry.KINDS}
    | {
        "losses": "loss",
        "data": "dataset",
    }
    | {kind: kind for kind in registry.KINDS}
)

# Arguments brickwork passes itself, per kind: the config does not set them.
SUPPLIED = {
    "model": {"num_classes", "input_shape", "in_channels", "vocab_size"},
    "dataset": {"seed", "model_name"},
    "optimizer": {"params"},
    "scheduler": {"optimizer", "horizon"},
    "loss": {"num_classes", "train_targets"},
    "metric": {"num_classes"},
    "callback": set(),
}
_ZOO_LIMIT = 200


@dataclass(frozen=True)
class Argument:
    """One keyword a factory takes: its default (None: required) and who supplies it."""

    name: str
    default: str | None
    supplied: bool


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, arguments, defining module and first doc line."""

    name: str
    arguments: tuple[Argument, ...]
    module: str
    summary: str

    def describe_arguments(self) -> str:
        parts = []
        for argument in self.arguments:
            if argument.supplied:
                parts.append(f"{argument.name} (set by brickwork)")
            elif argument.default is None:
                parts.append(f"{argument.name} (required)")
            else:
                parts.append(f"{argument.name}={argument.default}")
        return ", ".join(parts) or "-"


def resolve_kind(word: str) -> str:
    """`models` -> `model`; an unknown word is an error listing the valid ones."""
    from brickwork.errors import ConfigError

    if word in KIND_NAMES:
        return KIND_NAMES[word]
    plurals = sorted(name for name, kind in KIND_NAMES.items() if name not in registry.KINDS)
    plurals.remove("data")
    raise ConfigError(
        f"KIND '{word}': unknown kind{registry.suggest(word, plurals)}; "
        f"expected one of {', '.join(plurals)}"
    )


def list_entries(kind: str, pattern: str | None = None) -> tuple[list[Entry], int]:
    """Registered components of `kind` (and, with a pattern, zoo models) matching `pattern`,
    and how many zoo matches were left off (at most `_ZOO_LIMIT` are listed)."""
    entries = [
        describe(name, registry.get(kind, name), kind)
        for name in registry.available(kind)
        if matches(name, pattern)
    ]
    left_off = 0
    if kind == "model" and pattern:
        zoo = list(_zoo_entries(pattern))
        entries += zoo[:_ZOO_LIMIT]
        left_off = max(len(zoo) - _ZOO_LIMIT, 0)
    return entries, left_off


def matches(name: str, pattern: str | None) -> bool:
    """A glob (`resnet*`, `timm/*`) matches the whole name; plain text matches a part of it."""
    if not pattern:
        return True
    if any(char in pattern for char in "*?["):
        return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name.split("/")[-1], pattern)
    return pattern.lower() in name.lower()


def describe(name: str, factory: Callable[..., Any], kind: str) -> Entry:
    """The entry of one factory, from its signature and docstring."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # some builtins have no introspectable signature
        parameters = []
    if inspect.isclass(factory) and parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    arguments = tuple(
        Argument(
            p.name,
            None if p.default is inspect.Parameter.empty else _show(p.default),
            p.name in SUPPLIED[kind],
        )
        for p in parameters
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    )
    paragraph = (inspect.getdoc(factory) or "").split("\n\n")[0]
    return Entry(name, arguments, getattr(factory, "__module__", "?"), " ".join(paragraph.split()))


def _zoo_entries(pattern: str) -> Iterable[Entry]:
    """timm and torchvision classifiers whose names match, when those packages are installed."""
    note = "keyword arguments go to the library's own constructor"
    zoo_arguments = (Argument("num_classes", None, True), Argument("pretrained", "False", False))
    names: list[str] = []
    if importlib.util.find_spec("timm") is not None:
        import timm

        names += [f"timm/{n}" for n in timm.list_models() if matches(f"timm/{n}", pattern)]
    if importlib.util.find_spec("torchvision") is not None:
        from torchvision import models

        names += [
            f"torchvision/{n}"
            for n in models.list_models(module=models)
            if matches(f"torchvision/{n}", pattern)
        ]
    for name in names:
        yield Entry(name, zoo_arguments, name.split("/")[0], note)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)
