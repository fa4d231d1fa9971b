"""The README quick start, in English and in Korean, runs as written and says the same thing.

The commands are read from the ```bash block between `<!-- quickstart:start -->` and
`<!-- quickstart:end -->` in README.md and README.ko.md. Both lists must be equal (the
comments may differ by language); then the commands run, in order, in an empty folder
through a real shell, with `brickwork` and `pytest` on PATH as after an install.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"<!-- quickstart:start -->\n```bash\n(.*?)```\n<!-- quickstart:end -->", re.S)


def quickstart_commands(readme: Path) -> list[str]:
    """The commands of the quick-start block, comments and blank lines removed."""
    found = _BLOCK.findall(readme.read_text(encoding="utf-8"))
    assert len(found) == 1, f"{readme.name}: expected one quickstart block, found {len(found)}"
    lines = [line.split("#", 1)[0].strip() for line in found[0].splitlines()]
    return [line for line in lines if line]


def test_the_korean_quick_start_has_the_english_commands() -> None:
    english = quickstart_commands(REPOSITORY / "README.md")
    assert quickstart_commands(REPOSITORY / "README.ko.md") == english
    assert english[0].startswith("brickwork new ")
    for verb in ("train", "evaluate", "predict", "export"):
        assert any(command.startswith(f"brickwork {verb} ") for command in english), verb


def test_the_readme_links_the_korean_quick_start_at_the_top() -> None:
    head = (REPOSITORY / "README.md").read_text(encoding="utf-8").split("\n## ")[0]
    assert "(README.ko.md)" in head


def _shims(folder: Path) -> Path:
    """`brickwork` and `pytest` commands that run this interpreter, as an install provides."""
    folder.mkdir()
    for name, module in [("brickwork", "brickwork"), ("pytest", "pytest")]:
        shim = folder / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        shim.chmod(0o755)
    return folder


def test_the_quick_start_commands_run_in_an_empty_folder(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = "set -eu\n" + "\n".join(quickstart_commands(REPOSITORY / "README.ko.md")) + "\n"
    bin_dir = _shims(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = work / "my_project" / "runs" / "first"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    rows = (work / "my_project" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "input,class_index,label,probability" and len(rows) > 1
    assert (run / "export" / "model.torchscript.pt").stat().st_size > 0
