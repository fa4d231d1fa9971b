"""The typed config: schema, YAML loading, dotted overrides and fix-it errors.

Everything a run does is decided here, before any data or model is built, so a typo
costs a second instead of an epoch. Sections with a fixed shape forbid unknown keys;
component sections (`model`, `optimizer`, ...) carry a registry `name` plus the
keyword arguments of that factory, which `check_component_kwargs` validates against
the factory's signature.

    cfg = load_config("configs/digits.yaml", ["optimizer.lr=0.01"])
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from brickwork.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits.yaml"


class _Section(BaseModel):
    """A config section with a fixed set of keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(BaseModel):
    """A registry name plus the keyword arguments its factory takes."""

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        """Everything but `name` and the typed fields a subclass consumes itself."""
        own = set(type(self).model_fields) - {"name"} - self._forwarded_fields()
        data = self.model_dump(exclude={"name", *own})
        return data

    @classmethod
    def _forwarded_fields(cls) -> set[str]:
        """Typed fields that are also passed to the factory (e.g. `optimizer.lr`)."""
        return set()


class DataConfig(Component):
    name: str = "digits"
    batch_size: PositiveInt = 64
    global_batch_size: PositiveInt | None = None
    eval_batch_size: PositiveInt | None = None
    num_workers: NonNegativeInt = 0
    pin_memory: bool | None = Field(None, description="null: on when training on CUDA")
    persistent_workers: bool = False
    prefetch_factor: PositiveInt | None = None
    shuffle: bool = True
    drop_last: bool = False
    sampler: Literal["default", "weighted"] = Field(
        "default", description="weighted: draw training samples by inverse class frequency"
    )


class ModelConfig(Component):
    name: str = "cnn"
    init: Literal["kaiming", "xavier", "orthogonal"] | None = Field(
        None, description="re-initialise conv/linear weights (biases zero); null keeps defaults"
    )
    pretrained: bool | str = Field(
        False, description="true: hub weights (timm/torchvision); a path: a local weights file"
    )


class OptimizerConfig(Component):
    name: str = "adamw"
    lr: PositiveFloat = 1e-3

    @classmethod
    def _forwarded_fields(cls) -> set[str]:
        return {"lr"}


class SchedulerConfig(Component):
    name: str


class LossConfig(Component):
    name: str = "cross_entropy"


class MetricConfig(Component):
    name: str


class CallbackConfig(Component):
    name: str


class UnfreezeStage(_Section):
    """Make the parameters matching `modules` trainable when epoch `at_epoch` starts."""

    at_epoch: NonNegativeInt
    modules: list[str] = Field(min_length=1)


class FinetuneConfig(_Section):
    """Freezing, gradual unfreezing and per-group learning rates (see brickwork.finetune)."""

    freeze: Literal["backbone"] | list[str] = Field(
        [], description="'backbone' (all but the classifier head) or name patterns"
    )
    frozen_bn_eval: bool = Field(True, description="keep fully frozen BatchNorm in eval mode")
    unfreeze: list[UnfreezeStage] = []
    lr_mult: dict[str, PositiveFloat] = Field(
        {}, description="pattern (or 'backbone'/'head') -> multiplier of optimizer.lr"
    )
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="timm layer-wise LR decay per layer group from the head"
    )

    @property
    def active(self) -> bool:
        """Whether any of it changes the default (all trainable, one LR)."""
        return bool(self.freeze or self.unfreeze or self.lr_mult or self.layer_decay)


class CompileConfig(_Section):
    """`torch.compile` options: `trainer.compile: true`, or `{mode: ..., dynamic: ...}`."""

    enabled: bool = Field(False, description="wrap the training model with torch.compile")
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        Field("default", description="torch.compile mode; reduce-overhead adds CUDA graphs")
    )
    dynamic: bool | None = Field(
        None, description="true: shapes may vary without recompiling; null: PyTorch decides"
    )
    backend: str = Field("inductor", description="inductor, or eager/aot_eager to debug")


class TrainerConfig(_Section):
    max_epochs: PositiveInt | None = 20
    max_steps: PositiveInt | None = None
    accumulate_grad_batches: PositiveInt = 1
    gradient_clip_val: PositiveFloat | None = None
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    precision: Literal["32", "bf16", "16"] = "32"
    device: str = "auto"
    log_every_n_steps: PositiveInt = 50
    val_every_n_epochs: PositiveInt = 1
    test_after_fit: bool = True
    devices: PositiveInt = 1
    strategy: Literal["auto", "ddp", "dp"] = "auto"
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    dist_timeout_s: PositiveFloat = 1800
    channels_last: bool = False
    stop_signals: list[str] = Field(
        default_factory=lambda: ["SIGTERM", "SIGINT", "SIGUSR1"],
        description="signals that finish the step, save a checkpoint and exit 75",
    )
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_nonfinite_steps: NonNegativeInt = Field(
        10, description="with on_nonfinite=skip: stop once more steps than this were skipped"
    )
    compile: CompileConfig = Field(
        CompileConfig(),
        description="torch.compile the training model: true, or {mode, dynamic} (also on); "
        "evaluation, checkpoints and export use the plain module",
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # YAML reads `precision: 32` as an int; the enum is spelled as text.
        return str(value) if isinstance(value, int) else value

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_switch(cls, value: Any) -> Any:
        # `compile: true` turns it on with defaults; a mapping of options turns it on too.
        if isinstance(value, bool):
            return {"enabled": value}
        if isinstance(value, dict):
            return {"enabled": True, **value}
        if isinstance(value, CompileConfig):
            return value
        raise ValueError("expected true, false or options such as {mode: max-autotune}")

    @field_validator("stop_signals")
    @classmethod
    def _known_signals(cls, value: list[str]) -> list[str]:
        import signal

        catchable = sorted(
            s.name for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP)
        )
        for name in value:
            if name not in catchable:
                raise ValueError(
                    f"'{name}' is not a signal that can be caught; use names such as SIGUSR1"
                )
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _has_a_stop(self) -> TrainerConfig:
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("set trainer.max_epochs or trainer.max_steps (both are null)")
        return self


class CheckpointConfig(_Section):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    save_last: bool = True
    keep_k: NonNegativeInt = 1
    every_n_epochs: PositiveInt = 1
    every_n_steps: PositiveInt | None = Field(
        None, description="also save every n optimizer steps, mid-epoch included"
    )
    every_n_minutes: PositiveFloat | None = Field(
        None, description="also save when this many minutes passed since the last save"
    )


class EarlyStoppingConfig(_Section):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: PositiveInt = 5
    min_delta: NonNegativeFloat = 0.0


class TensorBoardConfig(_Section):
    enabled: bool = True
    graph: bool = True
    histogram_every_n_epochs: NonNegativeInt = 5
    image_grid: bool = True
    num_images: PositiveInt = 32


class LoggersConfig(_Section):
    progress_bar: bool = True
    tensorboard: TensorBoardConfig = TensorBoardConfig()


def _metric_list(value: Any) -> Any:
    """Allow `metrics: [accuracy, {name: top_k_accuracy, top_k: 3}]`."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class Config(_Section):
    """A whole run. Each field maps to a section of the YAML file."""

    name: Annotated[str, Field(min_length=1)] = "run"
    seed: int = 42
    imports: list[str] = []
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig | None = None
    loss: LossConfig = LossConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    metrics: list[MetricConfig] = [MetricConfig(name="accuracy")]
    trainer: TrainerConfig = TrainerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    early_stopping: EarlyStoppingConfig | None = None
    loggers: LoggersConfig = LoggersConfig()
    callbacks: list[CallbackConfig] = []

    _normalize_metrics = field_validator("metrics", mode="before")(_metric_list)

    @field_validator("name")
    @classmethod
    def _folder_safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(
                "the name becomes a folder under runs/: use letters, digits, '_', '.' and '-'"
            )
        return value

    _normalize_callbacks = field_validator("callbacks", mode="before")(_metric_list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to a run's `config.yaml`."""
        return self.model_dump(mode="json")


# Sections whose `name` picks a factory from the registry, with the kind to look in.
COMPONENT_SECTIONS: dict[str, str] = {
    "data": "dataset",
    "model": "model",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "loss": "loss",
}


def load_config(
    path: str | Path | dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    check_components: bool = True,
) -> Config:
    """Read (a YAML path, a plain dict, or None for the digits default), apply
    `key=value` overrides, validate. Raises ConfigError with a one-line, fix-it message.

    Example:
        >>> cfg = load_config(None, ["trainer.max_epochs=3", "optimizer.lr=0.01"])
    """
    if isinstance(path, dict):
        source, raw = Path.cwd() / "<config>", copy.deepcopy(path)
    else:
        source = Path(path) if path is not None else DEFAULT_CONFIG
        raw = read_yaml(source)
    # Component swaps (`model.name=mlp`) first, so they drop the old component's
    # arguments without dropping arguments given for the new one.
    for override in sorted(overrides, key=lambda o: not _is_component_swap(o)):
        apply_override(raw, override)
    config = validate_config(raw, source)
    if check_components:
        from brickwork.registry import import_project_modules

        try:
            import_project_modules(config.imports, source.parent)
        except (ImportError, FileNotFoundError, SyntaxError) as error:
            raise ConfigError(
                f"{source}: imports: {error}; check the module name and that the module "
                "sits beside the config file"
            ) from error
        check_component_kwargs(config, source)
    return config


def read_yaml(source: Path) -> dict[str, Any]:
    """Parse YAML safely into a mapping; anything else is a ConfigError naming the file."""
    if not source.is_file():
        raise ConfigError(f"{source}: config file not found; pass the path to a YAML file")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}:{where}: {problem}; fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (name:, model:, ...), "
            f"got a {type(data).__name__}"
        )
    return data


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `a.b.c=value` in place; the value is parsed as YAML (numbers, bools, lists, null)."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{override}': expected key=value, e.g. optimizer.lr=0.01")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    section = raw.get(parts[0])
    if _is_component_swap(override) and isinstance(section, dict) and section.get("name") != value:
        typed = _fields_at([parts[0]])
        raw[parts[0]] = {k: v for k, v in section.items() if k in typed}
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _is_component_swap(override: str) -> bool:
    """`model.name=...`: a new component whose old arguments no longer apply."""
    key = override.partition("=")[0]
    return key.count(".") == 1 and key.endswith(".name") and key.split(".")[0] in COMPONENT_SECTIONS


def validate_config(raw: dict[str, Any], source: Path | str = "<config>") -> Config:
    """Validate a raw mapping against the schema, reporting the first problem on one line."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, raw, str(source))) from None


def check_component_kwargs(config: Config, source: Path | str = "<config>") -> None:
    """Check every component's name and keyword arguments against its registered factory."""
    from brickwork import registry

    items: list[tuple[str, str, Component]] = [
        (section, kind, getattr(config, section))
        for section, kind in COMPONENT_SECTIONS.items()
        if getattr(config, section) is not None
    ]
    items += [(f"metrics[{i}]", "metric", m) for i, m in enumerate(config.metrics)]
    items += [(f"callbacks[{i}]", "callback", c) for i, c in enumerate(config.callbacks)]
    for section, kind, component in items:
        try:
            factory = registry.get(kind, component.name)
        except registry.RegistryError as error:
            raise ConfigError(f"{source}: {section}.name = '{component.name}': {error}") from None
        accepted, takes_any = registry.accepted_kwargs(factory)
        if takes_any:
            continue
        for key in component.kwargs:
            if key not in accepted:
                hint = registry.suggest(key, accepted)
                hint = hint.replace("`", f"`{section}.", 1) if hint else ""
                raise ConfigError(
                    f"{source}: {section}.{key}: unknown key for {kind} '{component.name}'{hint}; "
                    f"it takes: {', '.join(sorted(accepted)) or 'no arguments'}"
                )


def _describe(error: ValidationError, raw: dict[str, Any], source: str) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    key = _dotted(loc)
    if first["type"] == "extra_forbidden":
        siblings = _fields_at(loc[:-1])
        hint = _suggest_dotted(loc, siblings)
        return f"{source}: {key}: unknown key{hint}; valid keys here: {', '.join(siblings)}"
    if not loc:
        return f"{source}: {_clean(first['msg'])}"
    value = _lookup(raw, loc)
    shown = "missing" if value is _MISSING else f"{value!r}"
    return f"{source}: {key} = {shown}: {_clean(first['msg'])}"


def _clean(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def _dotted(loc: Sequence[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _suggest_dotted(loc: list[str], options: list[str]) -> str:
    from brickwork.registry import suggest

    hint = suggest(loc[-1], options)
    prefix = _dotted(loc[:-1])
    return hint.replace("`", f"`{prefix}.", 1) if hint and prefix else hint


_MISSING = object()


def _lookup(raw: Any, loc: Sequence[str]) -> Any:
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _fields_at(loc: Sequence[str]) -> list[str]:
    """The valid keys of the schema section at `loc` (for did-you-mean hints)."""
    model: Any = Config
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _section_type(field.annotation)
        if model is None:
            return []
    return sorted(model.model_fields)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
