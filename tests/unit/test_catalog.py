"""`brickwork ls KIND`: what is registered, with arguments and defaults from the signatures."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from brickwork import registry
from brickwork.cli import main

PROJECT_MODULE = '''
from torch import nn
from brickwork import register


@register("model", "catalog_probe_net")
class CatalogProbeNet(nn.Module):
    """A model only this test registers."""

    def __init__(self, num_classes: int, depth: int = 3, act: str = "gelu") -> None:
        super().__init__()
'''


@pytest.mark.parametrize(
    "kind", ["models", "datasets", "optimizers", "schedulers", "losses", "metrics", "callbacks"]
)
def test_ls_lists_every_registered_name_of_a_kind(
    capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    assert main(["ls", kind]) == 0
    out = capsys.readouterr().out
    singular = "loss" if kind == "losses" else kind.removesuffix("s")
    listed = {line.split()[0] for line in out.splitlines()[1:] if line and not line[0].isspace()}
    assert listed == set(registry.available(singular))


def test_ls_shows_each_argument_with_its_default_and_what_brickwork_fills_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ls", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = next(text for text in lines if text.startswith("cnn "))
    signature = inspect.signature(registry.get("model", "cnn"))
    for name, parameter in signature.parameters.items():
        if name in ("num_classes", "in_channels"):
            assert f"{name} (set by brickwork)" in line
        elif parameter.default is not inspect.Parameter.empty:
            assert f"{name}={parameter.default}".replace("(", "[").replace(")", "]") in line


def test_ls_includes_a_projects_components_from_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "probe_models.py").write_text(PROJECT_MODULE)
    assert main(["ls", "models", "--imports", "probe_models.py"]) == 0
    out = capsys.readouterr().out
    assert "catalog_probe_net" in out
    assert "num_classes (set by brickwork), depth=3, act='gelu'" in out
    assert "A model only this test registers." in out


def test_ls_inside_a_project_lists_the_projects_own_components(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own_registry: None,
) -> None:
    assert main(["new", "ls_project", "--template", "tabular"]) == 0
    monkeypatch.chdir(tmp_path / "ls_project" / "configs")
    assert main(["ls", "datasets"]) == 0
    out = capsys.readouterr().out
    assert "customer_table" in out and "[ls_project.data]" in out
    assert "file='data/train.csv'" in out and "seed (set by brickwork)" in out


def test_ls_reads_the_imports_of_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "probe_models.py").write_text(PROJECT_MODULE)
    (tmp_path / "configs" / "c.yaml").write_text("imports: [probe_models.py]\n")
    assert main(["ls", "models", "--config", "configs/c.yaml", "--filter", "probe"]) == 0
    out = capsys.readouterr().out
    assert "catalog_probe_net" in out and "cnn" not in out


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_ls_filter_lists_timm_and_torchvision_models_by_pattern(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ls", "models", "--filter", "resnet1*"]) == 0
    names = {
        line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line[:1] != " "
    }
    assert {"timm/resnet18", "torchvision/resnet18"} <= names
    assert all(name.split("/")[-1].startswith("resnet1") for name in names)


def test_ls_of_an_unknown_kind_suggests_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "modelz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "KIND 'modelz'" in err and "did you mean `models`" in err
