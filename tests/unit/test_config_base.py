"""`base: FILE` in a config: an experiment lists only what it changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brickwork.config import load_config
from brickwork.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


BASE = """\
name: base-run
model: {name: cnn, channels: [8, 16], dropout: 0.3}
optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
metrics: [accuracy, f1_macro]
"""


def test_an_experiment_overrides_its_base_key_by_key(tmp_path: Path) -> None:
    _write(tmp_path / "configs" / "base.yaml", BASE)
    experiment = _write(
        tmp_path / "configs" / "experiment.yaml",
        "base: base.yaml\nname: wide\nmodel: {channels: [16, 32]}\nmetrics: [accuracy]\n",
    )
    config = load_config(experiment)
    assert config.name == "wide"
    assert config.model.kwargs == {"channels": [16, 32], "dropout": 0.3}  # dropout from the base
    assert config.optimizer.kwargs == {"lr": 0.003, "weight_decay": 0.01}
    assert [m.name for m in config.metrics] == ["accuracy"]  # a list is replaced whole


def test_a_base_chain_merges_in_order_and_overrides_apply_last(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", BASE)
    _write(tmp_path / "b.yaml", "base: a.yaml\noptimizer: {lr: 0.1}\n")
    c = _write(tmp_path / "sub" / "c.yaml", "base: ../b.yaml\noptimizer: {lr: 0.2}\n")
    assert load_config(c).optimizer.lr == 0.2
    assert load_config(c, ["optimizer.lr=0.5"]).optimizer.lr == 0.5


def test_swapping_the_component_drops_the_base_arguments_for_the_old_one(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "mlp.yaml", "base: base.yaml\nmodel: {name: mlp}\n")
    config = load_config(child)
    assert config.model.name == "mlp" and config.model.kwargs == {}


def test_the_run_config_is_self_contained_without_base(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", BASE)
    child = _write(tmp_path / "child.yaml", "base: base.yaml\nseed: 7\n")
    written = load_config(child).to_dict()
    assert "base" not in written
    reloaded = load_config(_write(tmp_path / "run" / "config.yaml", yaml.safe_dump(written)))
    assert reloaded.to_dict() == written


@pytest.mark.parametrize(
    ("files", "fragments"),
    [
        ({"c.yaml": "base: missing.yaml\n"}, ["c.yaml: base = 'missing.yaml'", "no such file"]),
        ({"c.yaml": "base: [a.yaml]\n"}, ["base = ['a.yaml']", "path of a YAML config file"]),
        ({"c.yaml": "base: d.yaml\n", "d.yaml": "base: c.yaml\n"}, ["in a loop"]),
        ({"c.yaml": "base: c.yaml\n"}, ["in a loop"]),
    ],
)
def test_a_bad_base_is_one_line_naming_the_file_and_the_fix(
    tmp_path: Path, files: dict[str, str], fragments: list[str]
) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_base_cannot_be_given_as_an_override() -> None:
    with pytest.raises(ConfigError, match="write `base: FILE` at the top of the YAML"):
        load_config(None, ["base=other.yaml"])
