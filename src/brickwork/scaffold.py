"""`brickwork new` and `brickwork add`: a project that trains on the first try, and stubs in it.

A project is rendered from the files under `templates/`: `common/project/` for every
template plus `<template>/project/`, with `{{package}}`-style placeholders filled in
(`.tmpl` files) and data files copied as they are. `add` appends a registered stub to
the project's module of that kind and writes a config and a test for it, from
`<template>/stubs/` or `common/stubs/`.

Nothing that exists is overwritten without `force`: every target is checked before the
first file is written, so a refused command leaves no half-made project.

    create_project("my_project", Path("."), "image")
    add_component("model", "my_net", Path("my_project"))
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from brickwork.errors import ProjectError
from brickwork.version import __version__

TEMPLATES = ("image", "text", "tabular")
KIND_MODULES = {"model": "models", "dataset": "data", "callback": "callbacks"}
# Folders a project holds beside its package: a package of the same name would collide.
_RESERVED = {"brickwork", "configs", "data", "runs", "tests", "test", "build", "dist"}
_PACKAGE_DIR = "__package__"
_DOTFILE_PREFIX = "dot-"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class TemplateFacts:
    """What a template's README says about it: the data, and the input `predict` takes."""

    about: str
    predict_input: str


FACTS = {
    "image": TemplateFacts(
        "A small CNN learns scikit-learn's bundled handwritten digits (8x8 images, ten classes).",
        "data/predict.npy",
    ),
    "text": TemplateFacts(
        "A bag-of-embeddings classifier learns the topic of short sentences "
        "(data/sentences.csv), with its own padding `collate_fn`.",
        "data/predict.csv",
    ),
    "tabular": TemplateFacts(
        "An MLP learns whether a customer churns from a table of numeric and categorical "
        "columns (data/train.csv).",
        "data/predict.csv",
    ),
}


def check_name(name: str, what: str) -> None:
    """Refuse a name that is not a Python identifier or that would shadow a module.

    Example:
        >>> check_name("torch", "project")  # raises: it would shadow an installed package
    """
    if not name.isidentifier() or not name.isascii() or not name[0].isalpha():
        raise ProjectError(
            f"{what} name '{name}': use a Python identifier that starts with a letter "
            f"(letters, digits, '_'), e.g. {_suggest_identifier(name)}"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ProjectError(f"{what} name '{name}' is a Python keyword; choose another name")
    if name in sys.stdlib_module_names or name in _RESERVED:
        raise ProjectError(
            f"{what} name '{name}' would shadow Python's or the project's own '{name}'; "
            f"choose another name, e.g. my_{name}"
        )
    if _is_installed(name):
        raise ProjectError(
            f"{what} name '{name}' would shadow the installed package '{name}'; "
            f"choose another name, e.g. my_{name}"
        )


def _is_installed(name: str) -> bool:
    """Whether `import name` finds a module or regular package (a bare folder does not count)."""
    if name in sys.modules:
        return True
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin not in (None, "namespace")


def create_project(name: str, parent: Path, template: str = "image", force: bool = False) -> Path:
    """Write the project `parent/name` from `template`; returns its folder."""
    if template not in TEMPLATES:
        raise ProjectError(f"--template {template}: expected one of {', '.join(TEMPLATES)}")
    check_name(name, "project")
    root = Path(parent) / name
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{root}: exists and is not a folder; choose another project name")
    facts = FACTS[template]
    values = {
        "package": name,
        "template": template,
        "brickwork_version": __version__,
        "about": facts.about,
        "predict_input": facts.predict_input,
    }
    files: dict[Path, bytes] = {}
    for part in ("common", template):
        files.update(_render_tree(_template_dir(part, "project"), root, values))
    _write_files(files, force)
    return root


def add_component(kind: str, name: str, project: Path, force: bool = False) -> list[Path]:
    """Append a registered `kind` stub named `name` to the project, with a config and a test.

    Returns the files written or changed.
    """
    if kind not in KIND_MODULES:
        raise ProjectError(f"brickwork add {kind}: expected one of {', '.join(KIND_MODULES)}")
    check_name(name, kind)
    root, package, template = find_project(project)
    module = root / package / f"{KIND_MODULES[kind]}.py"
    if not module.is_file():
        raise ProjectError(
            f"{module}: no such file; `brickwork add {kind}` appends its stub there, restore it"
        )
    values = {"package": package, "name": name, "class_name": _class_name(name)}
    stub = _render(_stub(template, f"{kind}.py.tmpl").read_text(encoding="utf-8"), values)
    source = module.read_text(encoding="utf-8")
    _check_not_defined(kind, name, module, source, values["class_name"])
    files = {
        root / "configs" / f"{name}.yaml": _stub(template, f"{kind}.yaml.tmpl"),
        root / "tests" / f"test_{name}.py": _stub(template, f"test_{kind}.py.tmpl"),
    }
    rendered = {
        path: _render(text.read_text(encoding="utf-8"), values).encode()
        for path, text in files.items()
    }
    _write_files(rendered, force)
    module.write_text(source.rstrip("\n") + "\n" + stub, encoding="utf-8")
    return [module, *rendered]


def find_project(start: Path) -> tuple[Path, str, str]:
    """The project folder at or above `start`, its package name and its template.

    A project is a folder whose `pyproject.toml` has a `[tool.brickwork]` table, as
    `brickwork new` writes it.
    """
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _brickwork_table(pyproject)
            if table is not None:
                package, template = table.get("package"), table.get("template", "image")
                if not isinstance(package, str) or not (folder / package).is_dir():
                    raise ProjectError(
                        f"{pyproject}: [tool.brickwork] package = {package!r} is not a folder "
                        "beside it; set it to the project's package name"
                    )
                return folder, package, template if template in TEMPLATES else "image"
    raise ProjectError(
        f"{start}: not inside a brickwork project (no pyproject.toml with [tool.brickwork]); "
        "cd into a folder made by `brickwork new`, or pass --project DIR"
    )


def _brickwork_table(pyproject: Path) -> dict[str, object] | None:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ProjectError(f"{pyproject}: not valid TOML ({error}); fix the file") from None
    table = data.get("tool", {}).get("brickwork")
    return table if isinstance(table, dict) else None


def _check_not_defined(kind: str, name: str, module: Path, source: str, class_name: str) -> None:
    """Refuse a name that the project or brickwork already registers for `kind`."""
    from brickwork import registry

    if re.search(rf"""register\(\s*["']{kind}["']\s*,\s*["']{name}["']""", source):
        raise ProjectError(f"{module}: already registers {kind} '{name}'; choose another name")
    defined = rf"^(class {class_name}\b|def build_{name}\b)"
    if re.search(defined, source, re.MULTILINE):
        raise ProjectError(
            f"{module}: already defines {class_name} or build_{name}; choose another name"
        )
    if name in registry.available(kind):
        raise ProjectError(
            f"{kind} name '{name}' is one of brickwork's built-ins; choose another name"
        )


def _template_dir(*parts: str) -> Traversable:
    return resources.files("brickwork").joinpath("templates", *parts)


def _stub(template: str, filename: str) -> Traversable:
    own = _template_dir(template, "stubs", filename)
    return own if own.is_file() else _template_dir("common", "stubs", filename)


def _render_tree(folder: Traversable, root: Path, values: dict[str, str]) -> dict[Path, bytes]:
    """Target path -> content for every file under `folder`, placeholders filled in."""
    files: dict[Path, bytes] = {}
    for entry in folder.iterdir():
        name = entry.name.replace(_PACKAGE_DIR, values["package"])
        if name.startswith(_DOTFILE_PREFIX):
            name = "." + name.removeprefix(_DOTFILE_PREFIX)
        if entry.is_dir():
            if entry.name != "__pycache__":
                files.update(_render_tree(entry, root / name, values))
        elif name.endswith(".tmpl"):
            text = _render(entry.read_text(encoding="utf-8"), values)
            files[root / name.removesuffix(".tmpl")] = text.encode("utf-8")
        else:
            files[root / name] = entry.read_bytes()
    return files


def _render(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _write_files(files: dict[Path, bytes], force: bool) -> None:
    """Write every file, after checking that none exists (unless `force`)."""
    if not force:
        for path in sorted(files):
            if path.exists():
                raise ProjectError(
                    f"{path}: already exists; brickwork never overwrites a file "
                    "(move it away, choose another name, or pass --force)"
                )
    for path, content in sorted(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _suggest_identifier(name: str) -> str:
    cleaned = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"my_{cleaned}".rstrip("_")
    return cleaned
