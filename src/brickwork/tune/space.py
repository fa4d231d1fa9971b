"""The search space: SPACE.yaml's format, its validation, and a sampled point as overrides.

A space maps dotted config keys to distributions, the same keys `brickwork train`
takes as overrides:

    optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}
    model.dropout: {uniform: [0.0, 0.5]}
    trainer.max_epochs: {int: [5, 30]}
    data.batch_size: {choice: [32, 64, 128]}
    model.hidden_sizes: {choice: [[128], [256, 128]]}
    optimizer.weight_decay: [0.0, 0.01]      # a plain list: grid values

The space is checked against the config schema before any trial runs: every bound
and every choice is applied to the base config and validated, so an unknown key (with
the nearest valid one) or a value the schema refuses costs a second, not a study.
Choices that are not plain scalars (lists) travel through the engines as their YAML
text, which both Optuna and Ray can store, and come back as values here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from brickwork.errors import ConfigError

Kind = Literal["loguniform", "uniform", "int", "choice", "grid"]
RANGE_KINDS = ("loguniform", "uniform", "int")
KINDS = (*RANGE_KINDS, "choice")


@dataclass(frozen=True)
class Param:
    """One searched key: a range (`low`, `high`) or a list of `choices`."""

    key: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    @property
    def is_categorical(self) -> bool:
        return self.kind in ("choice", "grid")

    @property
    def labels(self) -> list[Any]:
        """The choices as the engines store them: scalars as they are, lists as YAML text."""
        return [label_of(value) for value in self.choices]

    def value_of(self, label: Any) -> Any:
        """The config value behind an engine's label (the inverse of `labels`)."""
        if not self.is_categorical:
            return int(label) if self.kind == "int" else float(label)
        for value in self.choices:
            if label_of(value) == label:
                return value
        raise ConfigError(f"{self.key}: {label!r} is not one of the choices {self.labels}")

    def corners(self) -> list[Any]:
        """The values validated before a study: the bounds, or every choice."""
        if self.is_categorical:
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    """The searched keys in the order they were written."""

    params: tuple[Param, ...]

    @property
    def is_grid(self) -> bool:
        """Every key a plain list: the default sampler then walks the whole grid."""
        return bool(self.params) and all(p.kind == "grid" for p in self.params)

    def grid_size(self) -> int:
        size = 1
        for param in self.params:
            size *= len(param.choices)
        return size

    def find(self, key: str) -> Param:
        for param in self.params:
            if param.key == key:
                return param
        raise KeyError(key)

    def to_overrides(self, labels: Mapping[str, Any]) -> list[str]:
        """`key=value` overrides (what `brickwork train` takes) for a point in engine labels."""
        return [to_override(p.key, p.value_of(labels[p.key])) for p in self.params]

    def to_dict(self) -> dict[str, Any]:
        """The space as SPACE.yaml writes it."""
        return {p.key: _spec_of(p) for p in self.params}


def label_of(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def to_override(key: str, value: Any) -> str:
    """`key=value` with the value as YAML text, so `1e-05` stays a float (`1.0e-05`)."""
    text = yaml.safe_dump([value], default_flow_style=True).strip()
    return f"{key}={text[1:-1]}"


def optuna_distribution(param: Param) -> Any:
    """The Optuna distribution of a key (choices as their labels)."""
    from optuna import distributions

    if param.is_categorical:
        return distributions.CategoricalDistribution(param.labels)
    if param.kind == "int":
        return distributions.IntDistribution(int(param.low), int(param.high))
    log = param.kind == "loguniform"
    return distributions.FloatDistribution(param.low, param.high, log=log)


def read_space_file(path: Path) -> dict[str, Any]:
    """SPACE.yaml as a mapping; a missing file or bad YAML is a one-line error."""
    from brickwork.config import read_yaml

    if not path.is_file():
        raise ConfigError(f"--space {path}: file not found; pass the path to your SPACE.yaml")
    return read_yaml(path)


def parse_space(raw: Mapping[str, Any], source: str) -> SearchSpace:
    """Read a space mapping; every malformed entry is a one-line error naming the key."""
    if not raw:
        raise ConfigError(
            f"{source}: the search space is empty; map dotted config keys to distributions, "
            "e.g. optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}"
        )
    return SearchSpace(tuple(_parse_param(str(key), spec, source) for key, spec in raw.items()))


def check_space(
    space: SearchSpace, config: Path | None, overrides: Sequence[str], source: str
) -> None:
    """Apply each bound and each choice to the base config and validate it like a config.

    The error names the space file, the key and the value, then the config's own fix-it
    message (which carries the nearest valid key for a typo).
    """
    from brickwork.config import load_config

    for param in space.params:
        for value in param.corners():
            override = to_override(param.key, value)
            try:
                load_config(config, [*overrides, override])
            except ConfigError as error:
                reason = str(error).split(": ", 1)[-1]
                raise ConfigError(
                    f"{source}: {param.key}: {value!r} is refused by the config: {reason}"
                ) from None


def _parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty grid; list at least one value")
        return Param(key, "grid", choices=tuple(spec))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"{where}: expected one distribution such as {{loguniform: [1.0e-4, 1.0e-1]}}, "
            f"{{uniform: [0, 1]}}, {{int: [1, 10]}}, {{choice: [a, b]}} or a plain list, "
            f"got {spec!r}"
        )
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        from brickwork.registry import suggest

        raise ConfigError(
            f"{where}: unknown distribution '{kind}'{suggest(str(kind), KINDS)}; "
            f"use one of: {', '.join(KINDS)}"
        )
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} takes a list, got {values!r}")
    if kind == "choice":
        return Param(key, "choice", choices=tuple(values))
    return _parse_range(key, kind, values, where)


def _parse_range(key: str, kind: str, values: list[Any], where: str) -> Param:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numeric:
        raise ConfigError(f"{where}: {kind} takes [low, high] numbers, got {values!r}")
    low, high = values
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(
            f"{where}: int takes whole numbers, got {values!r}; write [{low:.0f}, "
            f"{high:.0f}] or use uniform"
        )
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got {values!r}; swap or widen them")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {low!r}; e.g. 1.0e-5")
    return Param(key, kind, low=low, high=high)  # type: ignore[arg-type]


def _spec_of(param: Param) -> Any:
    if param.kind == "grid":
        return list(param.choices)
    if param.kind == "choice":
        return {"choice": list(param.choices)}
    return {param.kind: [param.low, param.high]}
