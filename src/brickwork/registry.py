"""Name -> factory tables, one per kind of component.

A config names components (`model.name: cnn`); this module turns those names into
factories. Users add their own with the same decorator brickwork uses for its
built-ins, in a module listed under the config's `imports:`:

    from brickwork import register

    @register("model", "tiny_net")
    class TinyNet(nn.Module): ...

Built-ins register lazily: the first lookup of a kind imports the module that
defines them, so `brickwork --help` never pays for torch.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

KINDS = ("model", "dataset", "optimizer", "scheduler", "loss", "metric", "callback")
# Arguments brickwork fills from a finished run (a dataset's `fitted`: its data.json, for
# predict and export); never config keys, so neither accepted nor listed as ones.
FROM_RUN = frozenset({"fitted"})

# Modules whose import registers the built-ins of each kind.
_BUILTIN_MODULES: dict[str, tuple[str, ...]] = {
    "model": (
        "brickwork.models.basic",
        "brickwork.models.text",
        "brickwork.models.zoo",
        "brickwork.models.huggingface",
    ),
    "dataset": (
        "brickwork.data.digits",
        "brickwork.data.image_folder",
        "brickwork.data.image_csv",
        "brickwork.data.tabular_csv",
        "brickwork.data.text_csv",
    ),
    "optimizer": ("brickwork.optim",),
    "scheduler": ("brickwork.optim",),
    "loss": ("brickwork.losses",),
    "metric": ("brickwork.metrics",),
    "callback": ("brickwork.callbacks",),
}

_TABLES: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
_REGISTERED_BY: dict[tuple[str, str], str] = {}  # (kind, name) -> the registering module
_loaded_builtins: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ValueError):
    """A name that is not registered, or a registration that clashes."""


def register(kind: str, name: str | None = None) -> Callable[[F], F]:
    """Register a factory (function or class) under `name` for `kind`.

    Example:
        >>> @register("loss", "my_loss")
        ... def my_loss() -> torch.nn.Module: ...
    """
    _check_kind(kind)
    # The module that registers (not the factory's own: torch's optimizers are built-ins too).
    caller = sys._getframe(1).f_globals.get("__name__", "")

    def decorator(factory: F) -> F:
        key = name or getattr(factory, "__name__", None)
        if not key:
            raise RegistryError(f"cannot infer a {kind} name for {factory!r}; pass name=")
        existing = _TABLES[kind].get(key)
        if (
            existing is not None
            and existing is not factory
            and _qualname(existing) != _qualname(factory)
        ):
            raise RegistryError(
                f"{kind} '{key}' is already registered by {_qualname(existing)}; "
                f"choose another name for {_qualname(factory)}"
            )
        _TABLES[kind][key] = factory
        _REGISTERED_BY[(kind, key)] = caller
        return factory

    return decorator


def get(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as `name`, with a did-you-mean error if there is none."""
    _check_kind(kind)
    _load_builtins(kind)
    table = _TABLES[kind]
    if name in table:
        return table[name]
    for prefix, resolver in _PREFIX_RESOLVERS.items():
        if name.startswith(prefix):
            return resolver(kind, name)
    raise RegistryError(
        f"unknown {kind} '{name}'{suggest(name, table)}; available: " + ", ".join(sorted(table))
    )


def available(kind: str) -> list[str]:
    """Registered names of one kind, sorted."""
    _check_kind(kind)
    _load_builtins(kind)
    return sorted(_TABLES[kind])


def built_in(kind: str) -> list[str]:
    """The names brickwork itself registers (not a project's or a test's), sorted."""
    return [
        name
        for name in available(kind)
        if _REGISTERED_BY.get((kind, name), "").startswith("brickwork.")
    ]


def build(
    kind: str,
    name: str,
    kwargs: dict[str, Any],
    *args: Any,
    provided: dict[str, Any] | None = None,
) -> Any:
    """Call the factory `name` with `args`, the config's `kwargs`, and whichever
    `provided` facts (e.g. `num_classes` from the data) it accepts and the config left unset.

    Arguments that do not fit the factory's signature, and ValueErrors it raises
    about them, become a one-line ConfigError naming the component.
    """
    from brickwork.errors import ConfigError

    factory = get(kind, name)
    accepted, takes_any = accepted_kwargs(factory)
    call = dict(kwargs)
    for key, value in (provided or {}).items():
        if value is not None and (key in accepted or takes_any):
            call.setdefault(key, value)
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(target)
        signature.bind(*((None,) if inspect.isclass(factory) else ()), *args, **call)
    except TypeError as error:
        raise ConfigError(f"{kind} '{name}': {error}; check that section of the config") from None
    try:
        return factory(*args, **call)
    except ConfigError:
        raise  # already one line that names the key and the fix
    except ValueError as error:
        raise ConfigError(f"{kind} '{name}': {error}; check that section of the config") from None


def accepted_kwargs(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """The keyword names a factory takes, and whether it also takes **kwargs."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(factory) and params and params[0].name == "self":
        params = params[1:]
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return names, var_kw


def check_kwarg_types(factory: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Check config values against the factory's annotations before anything is built.

    Annotations are the declaration: `hidden_sizes: Sequence[PositiveInt]` or
    `label_smoothing: Annotated[float, Field(ge=0, le=1)]` in a signature are enforced
    here, so a user's registered component gets the same checks as a built-in, and a
    mistake is one line instead of a failure deep inside torch. A boolean never passes
    for a number (`batch_size: true` is not 1). Raises ValueError naming the key.
    """
    hints = _type_hints(factory)
    for key, value in kwargs.items():
        annotation = hints.get(key)
        if annotation is None:
            continue
        if isinstance(value, bool) and not admits_bool(annotation):
            raise KwargTypeError(key, value, "expected a number or text, got a boolean")
        adapter = _adapter(annotation)
        if adapter is None:
            continue
        from pydantic import ValidationError

        try:
            adapter.validate_python(value)
        except ValidationError as error:
            first = error.errors()[0]
            where = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
            raise KwargTypeError(key, value, _lower_first(first["msg"]), where) from None


class KwargTypeError(ValueError):
    """A component argument whose value does not fit the factory's annotation."""

    def __init__(self, key: str, value: Any, message: str, where: str = "") -> None:
        super().__init__(f"{key}{where}: {message}")
        self.key, self.value, self.message, self.where = key, value, message, where


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    import typing

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: nothing to check against
        return {}


def admits_bool(annotation: Any) -> bool:
    """Whether a value typed `annotation` may be a boolean."""
    import typing

    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return admits_bool(typing.get_args(annotation)[0])
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return any(admits_bool(arg) for arg in typing.get_args(annotation))
    return False


def _adapter(annotation: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot check (a Protocol, a torch class): skip
        return None


def _lower_first(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def import_project_modules(modules: Iterable[str], base_dir: Path | None = None) -> None:
    """Import the modules a config lists under `imports:` so their components register.

    Entries are dotted module names (`my_project.models`) or paths to .py files,
    relative to the config file's folder. The config's folder and the current
    directory go on `sys.path` so a freshly scaffolded project works uninstalled;
    a dotted name found nowhere on it is looked for in the config's parent folders
    too, so `configs/base.yaml` and a run's `runs/<name>/<id>/config.yaml` both find
    the project's package from any working directory.
    """
    for folder in (Path.cwd(), base_dir):
        if folder is not None and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    for entry in modules:
        if entry.endswith(".py"):
            path = Path(entry) if Path(entry).is_absolute() else (base_dir or Path.cwd()) / entry
            _import_file(path)
        else:
            _add_package_root(entry.partition(".")[0], base_dir)
            importlib.import_module(entry)


def _add_package_root(package: str, base_dir: Path | None) -> None:
    """Put the folder that holds `package` on `sys.path` when `import` would not find it.

    Looked for, nearest first: the parents of `base_dir` (a project's `configs/`, or a run
    folder under its `runs/`), then `./<package>/`, the folder `brickwork new` makes.
    A bare folder of that name (a namespace package, such as the project folder seen
    from its parent) does not count as found.
    """
    if getattr(sys.modules.get(package), "__file__", None) is not None:
        return
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin not in (None, "namespace"):
        return
    parents = Path(base_dir).resolve().parents if base_dir is not None else ()
    for folder in (*parents, Path.cwd() / package):
        if (folder / package / "__init__.py").is_file() or (folder / f"{package}.py").is_file():
            sys.path.insert(0, str(folder))
            importlib.invalidate_caches()
            return


def suggest(name: str, options: Iterable[str]) -> str:
    """' (did you mean `x`?)' for the closest option, or ''."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"imports: {path} does not exist")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"imports: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)


def _load_builtins(kind: str) -> None:
    if kind in _loaded_builtins:
        return
    _loaded_builtins.add(kind)
    for module in _BUILTIN_MODULES.get(kind, ()):
        importlib.import_module(module)


def _check_kind(kind: str) -> None:
    if kind not in _TABLES:
        raise RegistryError(f"unknown component kind '{kind}'; kinds are: {', '.join(KINDS)}")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# Prefixed names (`timm/resnet18`) resolve through a zoo instead of the table.
_PREFIX_RESOLVERS: dict[str, Callable[[str, str], Callable[..., Any]]] = {}


def register_prefix(prefix: str, resolver: Callable[[str, str], Callable[..., Any]]) -> None:
    """Let names starting with `prefix` resolve through `resolver(kind, name)`."""
    _PREFIX_RESOLVERS[prefix] = resolver
