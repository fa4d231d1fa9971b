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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    ValidationInfo,
    field_validator,
    model_validator,
)

from brickwork.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits.yaml"


def _no_bool_for_number(value: Any, info: ValidationInfo, fields: dict[str, Any]) -> Any:
    """`batch_size: true` is a mistake, not 1: a boolean passes only where one is typed."""
    field = fields.get(info.field_name or "")
    if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
        raise ValueError("expected a number or text, got a boolean")
    return value


def _admits_bool(annotation: Any) -> bool:
    from brickwork.registry import admits_bool

    return admits_bool(annotation)


class _Section(BaseModel):
    """A config section with a fixed set of keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_bool_for_number(value, info, cls.model_fields)


class Component(BaseModel):
    """A registry name plus the keyword arguments its factory takes."""

    model_config = ConfigDict(extra="allow")

    name: str

    @field_validator("*", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any, info: ValidationInfo) -> Any:
        return _no_bool_for_number(value, info, cls.model_fields)

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


# A batch larger than this is a typo (and Python's slicing refuses past sys.maxsize).
BatchSize = Annotated[int, Field(gt=0, le=2**31 - 1)]


class DataConfig(Component):
    name: str = "digits"
    batch_size: BatchSize = 64
    global_batch_size: BatchSize | None = None
    eval_batch_size: BatchSize | None = None
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
        False,
        description="true: hub weights (timm/torchvision) or the hf/ folder's; a path: a file",
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
    """Make the parameters matching `modules` trainable when epoch `at_epoch` starts
    (counted from 1, as on the console: `at_epoch: 3` trains them from the third epoch)."""

    at_epoch: PositiveInt
    modules: list[str] = Field(min_length=1)


class LoraConfig(_Section):
    """Low-rank adapters (PEFT's LoRA) on the named linear layers; the head trains in full."""

    r: PositiveInt = Field(8, description="rank of each adapter")
    alpha: PositiveInt = Field(16, description="scaling numerator: updates are x alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] = Field(
        ["query", "value"],
        min_length=1,
        description="names (last part) of the linear layers that get adapters",
    )


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
        None,
        gt=0,
        le=1,
        description="layer-wise LR decay from the head (timm groups, hf/ encoder layers)",
    )
    lora: LoraConfig | None = Field(
        None, description="LoRA adapters (needs peft: brickwork[hf]); null: train the weights"
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


class WandbConfig(_Section):
    """Weights & Biases; its files stay in the run folder (see docs/tracking.md)."""

    enabled: bool = False
    project: str | None = Field(None, description="null: the config's name")
    entity: str | None = Field(None, description="team or user; null: your W&B default")
    group: str | None = None
    tags: list[str] = []
    name: str | None = Field(None, description="the W&B run name; null: <name>/<run folder>")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="null: the WANDB_MODE environment variable, else online"
    )
    log_model: bool = Field(False, description="upload the best checkpoint as an artifact")


class MlflowConfig(_Section):
    """MLflow; a local SQLite store under runs/ unless a tracking URI is given."""

    enabled: bool = False
    tracking_uri: str | None = Field(
        None, description="null: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db"
    )
    experiment: str | None = Field(None, description="null: the config's name")
    run_name: str | None = Field(None, description="null: <name>/<run folder>")
    log_model: bool = Field(True, description="log the best model.safetensors as an artifact")


def _enabled_flag(value: Any) -> Any:
    """Allow `loggers.wandb=true` as a short form of `loggers.wandb.enabled=true`."""
    return {"enabled": value} if isinstance(value, bool) else value


class LoggersConfig(_Section):
    progress_bar: bool = True
    tensorboard: TensorBoardConfig = TensorBoardConfig()
    wandb: WandbConfig = WandbConfig()
    mlflow: MlflowConfig = MlflowConfig()

    _short_flags = field_validator("tensorboard", "wandb", "mlflow", mode="before")(_enabled_flag)


class TuneConfig(_Section):
    """A hyperparameter search over this config (`brickwork tune`, see docs/tune.md)."""

    space: dict[str, Any] = Field(
        default_factory=dict, description="dotted config key -> distribution (docs/tune.md)"
    )
    metric: str | None = Field(None, description="what to optimise; null: checkpoint.monitor")
    mode: Literal["min", "max"] | None = Field(None, description="null: checkpoint.mode")
    num_trials: PositiveInt | None = Field(None, description="null: 20, or the grid's size")
    timeout_s: PositiveFloat | None = Field(None, description="start no trial after this long")
    sampler: Literal["tpe", "random", "grid", "cmaes", "bohb"] | None = Field(
        None, description="null: grid when every key is a list, else tpe"
    )
    pruner: Literal["none", "median", "hyperband", "asha", "pbt"] = "median"


def _metric_list(value: Any) -> Any:
    """Allow `metrics: [accuracy, {name: top_k_accuracy, top_k: 3}]`."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


class Config(_Section):
    """A whole run. Each field maps to a section of the YAML file."""

    base: Annotated[str | None, Field(exclude=True)] = None  # merged away by `read_config`
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
    tune: TuneConfig | None = None

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
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Config:
    """Read (a YAML path, a plain dict, or None for the digits default), apply
    `key=value` overrides, validate. Raises ConfigError with a one-line, fix-it message.
    `upgrade` rewrites what was read before the overrides (an older run folder's
    config in today's meaning, `brickwork.run_format`).

    Example:
        >>> cfg = load_config(None, ["trainer.max_epochs=3", "optimizer.lr=0.01"])
    """
    if isinstance(path, dict):
        source = Path.cwd() / "<config>"
        raw = merge_base(copy.deepcopy(path), source)
    else:
        source = Path(path) if path is not None else DEFAULT_CONFIG
        raw = read_config(source)
    if upgrade is not None:
        raw = upgrade(raw)
    # Component swaps (`model.name=mlp`) first, so they drop the old component's
    # arguments without dropping arguments given for the new one.
    for override in sorted(overrides, key=lambda o: not _is_component_swap(o)):
        apply_override(raw, override)
    config = validate_config(raw, Origin(source, tuple(overrides)))
    if check_components:
        from brickwork.registry import import_project_modules

        try:
            import_project_modules(config.imports, source.parent)
        except (ImportError, FileNotFoundError, SyntaxError) as error:
            raise ConfigError(
                f"{source}: imports: {error}; check the module name and that the module "
                "sits beside the config file or in a folder above it (or pip install its project)"
            ) from error
        check_component_kwargs(config, Origin(source, tuple(overrides)))
        check_logger_packages(config, source)
    return config


@dataclass(frozen=True)
class Origin:
    """Where a config value came from: the file, or a `key=value` typed on the command line.

    An error in an override names the override, not a file the user never opened.
    """

    source: Path | str
    overrides: tuple[str, ...] = ()

    def of(self, key: str) -> str:
        """'override trainer.max_epochs=-1' when `key` was set by one, else the file."""
        for override in reversed(self.overrides):
            typed = override.partition("=")[0]
            if key == typed or key.startswith((typed + ".", typed + "[")):
                return f"override {override}"
            if typed.startswith(key + "."):
                return f"override {override}"
        return str(self.source)


# Optional loggers: the package each needs and the extra that installs it.
LOGGER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def check_logger_packages(config: Config, source: Path | str = "<config>") -> None:
    """A chosen tracker whose package is missing fails here, before a run folder exists.

    Imports the package (only when chosen), so a broken install fails here too.
    """
    import importlib

    for logger, package in LOGGER_PACKAGES.items():
        if not getattr(config.loggers, logger).enabled:
            continue
        try:
            importlib.import_module(package)
        except ImportError:
            raise ConfigError(
                f"{source}: loggers.{logger}.enabled = true but the {package} package is not "
                f"installed; pip install 'brickwork[{logger}]', or set "
                f"loggers.{logger}.enabled=false"
            ) from None


def read_config(source: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its `base:` chain merged in: the file's keys win over its base's.

    `base: base.yaml` (relative to the file) lets an experiment config list only what it
    changes; sections merge key by key, any other value (lists too) is replaced whole.
    A swapped component (`model.name`) drops the base's arguments for the old one.
    """
    return merge_base(read_yaml(source), source, _seen)


def merge_base(raw: dict[str, Any], source: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """`raw` merged over the file its `base:` names (if any), that file's base first."""
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{source}: base = {base!r}: expected the path of a YAML config file")
    path = (source.parent / base).resolve()
    if path in _seen or path == source.resolve():
        raise ConfigError(f"{source}: base = '{base}': the configs name each other in a loop")
    if not path.is_file():
        raise ConfigError(
            f"{source}: base = '{base}': no such file {path}; give a path relative to {source.name}"
        )
    return _merge(read_config(path, (*_seen, source.resolve())), raw)


def _merge(base: dict[str, Any], child: dict[str, Any], top: bool = True) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            swapped = value.get("name", old.get("name")) != old.get("name")
            if top and key in COMPONENT_SECTIONS and swapped:
                old = {k: v for k, v in old.items() if k in _fields_at([key])}
            merged[key] = _merge(old, value, top=False)
        else:
            merged[key] = value
    return merged


def read_yaml(source: Path) -> dict[str, Any]:
    """Parse YAML safely into a mapping; anything else is a ConfigError naming the file."""
    if not source.is_file():
        raise ConfigError(f"{source}: config file not found; pass the path to a YAML file")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{source}: byte {error.start} is not UTF-8 text; save the file as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}:{where}: {problem}; fix the YAML syntax") from None
    if data is None:
        raise ConfigError(
            f"{source}: the config file is empty; add sections (name:, model:, ...), "
            "or omit the CONFIG argument to use the built-in digits config"
        )
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
    if key == "base":
        raise ConfigError(
            f"override '{override}': base is read from the config file; "
            "write `base: FILE` at the top of the YAML instead"
        )
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


def validate_config(raw: dict[str, Any], source: Origin | Path | str = "<config>") -> Config:
    """Validate a raw mapping against the schema, reporting the first problem on one line."""
    origin = source if isinstance(source, Origin) else Origin(source)
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, raw, origin)) from None


def check_component_kwargs(config: Config, source: Origin | Path | str = "<config>") -> None:
    """Check every component's name, keyword names and values against its registered
    factory's signature (see `registry.check_kwarg_types`)."""
    from brickwork import registry

    origin = source if isinstance(source, Origin) else Origin(source)

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
            where = origin.of(f"{section}.name")
            raise ConfigError(
                f"{where}: {section}.name = '{component.name}': {error}{_register_hint(kind)}"
            ) from None
        accepted, takes_any = registry.accepted_kwargs(factory)
        accepted -= registry.FROM_RUN
        for key in [] if takes_any else component.kwargs:
            if key not in accepted:
                hint = registry.suggest(key, accepted)
                hint = hint.replace("`", f"`{section}.", 1) if hint else ""
                raise ConfigError(
                    f"{origin.of(f'{section}.{key}')}: {section}.{key}: unknown key for "
                    f"{kind} '{component.name}'{hint}; "
                    f"it takes: {', '.join(sorted(accepted)) or 'no arguments'}"
                )
        try:
            registry.check_kwarg_types(factory, component.kwargs)
        except registry.KwargTypeError as error:
            key = f"{section}.{error.key}"
            raise ConfigError(
                f"{origin.of(key)}: {key}{error.where} = {error.value!r}: {error.message}; "
                f"set a value {kind} '{component.name}' accepts"
            ) from None


def _register_hint(kind: str) -> str:
    """How a component registered in a notebook or script becomes visible to this command."""
    return (
        f"; a {kind} registered in your own code is found when its module is listed under "
        "`imports:` in the config (or use the Python API in the same session)"
    )


def _describe(error: ValidationError, raw: dict[str, Any], origin: Origin) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    key = _dotted(loc)
    source = origin.of(key) if key else str(origin.source)
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
