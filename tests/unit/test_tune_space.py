"""SPACE.yaml: parsed into typed parameters, checked against the config schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from brickwork.errors import ConfigError
from brickwork.tune.space import check_space, parse_space, to_override


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"optimizer.lr": {"logunifrom": [1e-4, 1e-1]}}, "did you mean `loguniform`"),
        ({"optimizer.lr": {"loguniform": [0.0, 1e-1]}}, "loguniform needs low > 0"),
        ({"model.dropout": {"uniform": [0.5, 0.1]}}, "needs low < high"),
        ({"trainer.max_epochs": {"int": [1.5, 4]}}, "int takes whole numbers"),
        ({"data.batch_size": {"choice": []}}, "choice takes a list"),
        ({"data.batch_size": []}, "an empty grid"),
        ({"optimizer.lr": 0.1}, "expected one distribution"),
        ({}, "the search space is empty"),
    ],
)
def test_malformed_space_names_the_key_and_the_fix(spec: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_space(spec, "SPACE.yaml")
    assert str(error.value).startswith("SPACE.yaml")
    assert expected in str(error.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"trainer.max_epoch": [2, 3]}, "did you mean `trainer.max_epochs`"),
        ({"optimzer.lr": {"uniform": [0.1, 0.2]}}, "did you mean `optimizer`"),
        ({"data.batch_size": {"choice": [0, 32]}}, "data.batch_size: 0 is refused"),
        ({"model.hidden_sizez": [[16]]}, "model.hidden_sizez"),
    ],
)
def test_space_is_validated_against_the_config_before_any_trial(spec: dict, expected: str) -> None:
    space = parse_space(spec, "SPACE.yaml")
    with pytest.raises(ConfigError) as error:
        check_space(space, None, ["model.name=mlp"], "SPACE.yaml")
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_list_choices_round_trip_through_engine_labels() -> None:
    space = parse_space({"model.hidden_sizes": {"choice": [[16], [32, 16]]}}, "s")
    param = space.params[0]
    assert param.labels == ["[16]", "[32, 16]"]
    assert space.to_overrides({"model.hidden_sizes": "[32, 16]"}) == ["model.hidden_sizes=[32, 16]"]


def test_small_floats_stay_floats_in_overrides() -> None:
    override = to_override("optimizer.lr", 1e-5)
    assert yaml.safe_load(override.split("=", 1)[1]) == pytest.approx(1e-5)


def test_plain_lists_make_a_grid() -> None:
    space = parse_space({"optimizer.lr": [0.1, 0.2], "model.dropout": [0.0, 0.1, 0.2]}, "s")
    assert space.is_grid and space.grid_size() == 6
    assert not parse_space({"optimizer.lr": {"uniform": [0.1, 0.2]}}, "s").is_grid


def test_valid_space_passes_the_check(tmp_path: Path) -> None:
    space = parse_space(
        {"optimizer.lr": {"loguniform": [1e-4, 1e-1]}, "model.hidden_sizes": [[16], [32, 16]]}, "s"
    )
    check_space(space, None, ["model.name=mlp"], "s")
