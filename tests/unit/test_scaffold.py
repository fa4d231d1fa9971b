"""`brickwork new` and `brickwork add`: names checked, files never overwritten, nothing half-made.

Through `brickwork.cli.main` in-process: the same argparse and one-line errors as the
console script, without a Python start-up per case. Generating a project only copies
files, so these cases take milliseconds; the projects are trained in
tests/integration/test_templates.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.cli import main


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("torch", ["'torch' would shadow the installed package", "e.g. my_torch"]),
        ("json", ["'json' would shadow Python's", "e.g. my_json"]),
        ("data", ["'data' would shadow", "e.g. my_data"]),
        ("my-project", ["'my-project'", "Python identifier", "e.g. my_project"]),
        ("1st_try", ["'1st_try'", "starts with a letter", "e.g. my_1st_try"]),
        ("_hidden", ["'_hidden'", "starts with a letter"]),
        ("class", ["'class' is a Python keyword"]),
    ],
)
def test_a_bad_project_name_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fragments: list[str]
) -> None:
    assert main(["new", name]) == 2
    message = _one_error_line(capsys)
    assert all(fragment in message for fragment in fragments), message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("template", ["image", "text", "tabular"])
def test_new_writes_the_layout_and_opens_each_config_with_its_command(
    tmp_path: Path, template: str
) -> None:
    assert main(["new", "proj", "--template", template]) == 0
    root = tmp_path / "proj"
    for path in [
        "configs/base.yaml",
        "configs/experiment.yaml",
        "proj/__init__.py",
        "proj/models.py",
        "proj/data.py",
        "proj/callbacks.py",
        "tests/test_project.py",
        "pyproject.toml",
        ".gitignore",
        "README.md",
    ]:
        assert (root / path).is_file(), path
    assert "runs/" in (root / ".gitignore").read_text().splitlines()
    for config in (root / "configs").glob("*.yaml"):
        head = config.read_text().split("\n\n")[0]
        assert head.startswith("# ") and f"brickwork train configs/{config.name}" in head
    texts = [p.read_text() for p in root.rglob("*") if p.is_file() and p.suffix != ".npy"]
    assert not [text for text in texts if "{{" in text]  # every placeholder filled


def test_new_never_overwrites_and_writes_nothing_when_one_file_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", "proj"]) == 0
    root = tmp_path / "proj"
    (root / "README.md").write_text("my own notes\n")
    (root / "tests" / "test_project.py").unlink()
    before = _files(root)
    capsys.readouterr()
    assert main(["new", "proj"]) == 2
    message = _one_error_line(capsys)
    assert "already exists" in message and "--force" in message
    assert message.startswith("brickwork new: error: proj/")  # names the file
    assert _files(root) == before  # the user's README kept, the deleted test not re-created


def test_new_force_rewrites_the_template_files(tmp_path: Path) -> None:
    assert main(["new", "proj"]) == 0
    (tmp_path / "proj" / "README.md").write_text("my own notes\n")
    assert main(["new", "proj", "--force"]) == 0
    assert (tmp_path / "proj" / "README.md").read_text().startswith("# proj")


def test_new_creates_the_project_under_directory(tmp_path: Path) -> None:
    assert main(["new", "proj", "--directory", "work/projects"]) == 0
    assert (tmp_path / "work" / "projects" / "proj" / "configs" / "base.yaml").is_file()


@pytest.mark.parametrize("kind", ["model", "dataset", "callback"])
def test_add_writes_a_registered_stub_a_config_and_a_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    assert main(["new", "proj", "--template", "text"]) == 0
    monkeypatch.chdir(tmp_path / "proj" / "configs")  # a subfolder: the project is found above
    assert main(["add", kind, "my_part"]) == 0
    root = tmp_path / "proj"
    module = {"model": "models", "dataset": "data", "callback": "callbacks"}[kind]
    assert f'@register("{kind}", "my_part")' in (root / "proj" / f"{module}.py").read_text()
    config = (root / "configs" / "my_part.yaml").read_text()
    assert "base: base.yaml" in config and "my_part" in config
    assert "brickwork train configs/my_part.yaml" in config
    assert "def test_my_part" in (root / "tests" / "test_my_part.py").read_text()
    compile((root / "proj" / f"{module}.py").read_text(), module, "exec")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["add", "model", "my_net"], ["already registers model 'my_net'"]),
        (["add", "model", "cnn"], ["'cnn' is one of brickwork's built-ins"]),
        (["add", "dataset", "numpy"], ["would shadow the installed package 'numpy'"]),
        (["add", "callback", "my callback"], ["Python identifier", "e.g. my_callback"]),
        (["add", "model", "taken"], ["configs/taken.yaml: already exists", "--force"]),
    ],
)
def test_add_refuses_a_taken_or_bad_name_and_changes_no_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragments: list[str],
) -> None:
    assert main(["new", "proj"]) == 0
    monkeypatch.chdir(tmp_path / "proj")
    assert main(["add", "model", "my_net"]) == 0
    (tmp_path / "proj" / "configs" / "taken.yaml").write_text("# mine\n")
    before = _files(tmp_path / "proj")
    capsys.readouterr()
    assert main(args) == 2
    message = _one_error_line(capsys)
    assert all(fragment in message for fragment in fragments), message
    assert _files(tmp_path / "proj") == before


def test_add_outside_a_project_says_where_to_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["add", "model", "my_net"]) == 2
    message = _one_error_line(capsys)
    assert "not inside a brickwork project" in message and "brickwork new" in message
