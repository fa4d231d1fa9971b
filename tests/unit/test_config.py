"""Config loading: defaults, typed overrides, and one-line fix-it errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from brickwork import registry
from brickwork.config import DEFAULT_CONFIG, apply_override, load_config
from brickwork.errors import ConfigError


def test_default_config_is_the_digits_cnn() -> None:
    config = load_config()
    assert config.data.name == "digits"
    assert config.model.name == "cnn"
    assert config.checkpoint.monitor == "val/acc"


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optimizer.lr=0.01", ("optimizer", "lr"), 0.01),
        ("trainer.max_epochs=5", ("trainer", "max_epochs"), 5),
        ("data.batch_size=64", ("data", "batch_size"), 64),
        ("loggers.progress_bar=false", ("loggers", "progress_bar"), False),
        ("model.channels=[4,8]", ("model", "channels"), [4, 8]),
        ("trainer.gradient_clip_val=null", ("trainer", "gradient_clip_val"), None),
        ("trainer.precision=bf16", ("trainer", "precision"), "bf16"),
    ],
)
def test_overrides_are_typed(override: str, key: tuple[str, str], expected: object) -> None:
    config = load_config(None, [override]).to_dict()
    assert config[key[0]][key[1]] == expected


def test_override_creates_a_section_that_was_null() -> None:
    config = load_config(None, ["scheduler=null", "early_stopping.patience=2"])
    assert config.scheduler is None
    assert config.early_stopping is not None and config.early_stopping.patience == 2


def test_precision_written_as_a_number_in_yaml_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  precision: 32\n")
    assert load_config(path).trainer.precision == "32"


def test_partial_yaml_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: tiny\nmodel:\n  name: mlp\n  hidden_sizes: [16]\n")
    config = load_config(path)
    assert config.name == "tiny" and config.model.kwargs == {"hidden_sizes": [16]}
    assert config.optimizer.name == "adamw"


REPOSITORY = Path(__file__).parents[2]


def _shipped_yaml_files() -> list[Path]:
    roots = [REPOSITORY / "src", REPOSITORY / "examples", REPOSITORY / "docs"]
    return sorted(
        p for root in roots for p in root.rglob("*.y*ml") if p.suffix in {".yaml", ".yml"}
    )


def _yaml_blocks_in_docs() -> list[tuple[str, str]]:
    """Every ```yaml block of the README and docs/, as (where, text)."""
    import re

    blocks = []
    for page in [REPOSITORY / "README.md", *sorted((REPOSITORY / "docs").glob("*.md"))]:
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)):
            blocks.append((f"{page.name}#{index}", block))
    return blocks


def test_every_shipped_config_loads() -> None:
    shipped = _shipped_yaml_files()
    assert DEFAULT_CONFIG in shipped and len(shipped) >= 3  # the default and the examples
    for path in shipped:
        load_config(path, check_components=False)  # examples may import their own modules
        assert path.read_text().startswith("#"), f"{path}: open with what it is and how to run it"


@pytest.mark.parametrize(
    ("where", "block"), _yaml_blocks_in_docs(), ids=[w for w, _ in _yaml_blocks_in_docs()]
)
def test_every_yaml_snippet_in_the_docs_is_valid_for_what_it_is(where: str, block: str) -> None:
    """A config snippet loads as a config; a search space (dotted keys) as a space over
    the digits MLP, the model the docs' spaces tune."""
    import yaml

    from brickwork.tune.space import check_space, parse_space

    raw = yaml.safe_load(block)
    if all("." in str(key) for key in raw):
        check_space(parse_space(raw, where), None, ["model.name=mlp"], where)
    else:
        load_config(raw, check_components=False)


def test_override_without_equals_sign_is_explained() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override({}, "optimizer.lr")


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["optimizer.lrr=0.1"], ["optimizer.lrr", "did you mean `optimizer.lr`"]),
        (["trainer.max_epoch=3"], ["trainer.max_epoch", "did you mean `trainer.max_epochs`"]),
        (["trainr.max_epochs=3"], ["trainr", "did you mean `trainer`"]),
        (["optimizer.lr=-1"], ["optimizer.lr = -1", "greater than 0"]),
        (["optimizer.lr=fast"], ["optimizer.lr = 'fast'", "number"]),
        (["trainer.precision=8"], ["trainer.precision = 8", "'32', 'bf16' or '16'"]),
        (["trainer.device=tpu"], ["trainer.device = 'tpu'", "auto, cpu, cuda"]),
        (["checkpoint.mode=up"], ["checkpoint.mode = 'up'", "'min' or 'max'"]),
        (["model.name=cnnn"], ["model.name = 'cnnn'", "did you mean `cnn`"]),
        (["optimizer.name=adamw", "optimizer.momentun=0.9"], ["optimizer.momentun", "unknown key"]),
        (["model.chanels=[8]"], ["model.chanels", "did you mean `model.channels`"]),
        (["trainer.max_epochs=null"], ["max_epochs or trainer.max_steps"]),
        (["metrics=[acuracy]"], ["metrics[0].name = 'acuracy'", "did you mean `accuracy`"]),
    ],
)
def test_bad_values_name_the_override_key_value_and_fix(
    overrides: list[str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    message = str(caught.value)
    assert "\n" not in message
    # The value was typed on the command line: the message names that, not a file.
    assert message.startswith(f"override {overrides[-1]}: "), message
    assert str(DEFAULT_CONFIG) not in message
    for fragment in fragments:
        assert fragment in message


def test_swapping_a_component_drops_the_old_ones_arguments() -> None:
    config = load_config(None, ["model.hidden_sizes=[32]", "model.name=mlp", "data.batch_size=16"])
    assert config.model.name == "mlp"
    assert config.model.kwargs == {"hidden_sizes": [32]}  # the cnn's `channels` are gone
    assert config.data.batch_size == 16
    swapped = load_config(None, ["scheduler.name=step", "scheduler.step_size=3"])
    assert swapped.scheduler is not None and swapped.scheduler.kwargs == {"step_size": 3}


def test_a_bad_value_in_the_file_names_the_file_not_an_override(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("trainer:\n  max_epochs: -1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, ["optimizer.lr=0.01"])
    assert str(caught.value).startswith(f"{config}: trainer.max_epochs = -1")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["optimizer.betas=[0.9]"], "optimizer.betas[1]"),
        (["model.name=mlp", "model.hidden_sizes=[-5]"], "model.hidden_sizes[0] = [-5]"),
        (["model.channels=[8,0]"], "model.channels[1] = [8, 0]"),
        (["model.dropout=1.5"], "model.dropout = 1.5"),
        (["loss.label_smoothing=2"], "loss.label_smoothing = 2"),
        (["scheduler.name=cosine", "scheduler.warmup_steps=-10"], "scheduler.warmup_steps = -10"),
        (["scheduler.name=step", "scheduler.step_size=0"], "scheduler.step_size = 0"),
        (["model.name=mlp", "model.dropout=true"], "got a boolean"),
        (["data.batch_size=true"], "data.batch_size = True: expected a number"),
        (["data.batch_size=100000000000000000000"], "less than or equal to 2147483647"),
        (["trainer.max_epochs=false"], "got a boolean"),
    ],
)
def test_component_arguments_are_checked_against_the_factory_signature(
    overrides: list[str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("override ")


def test_a_registered_components_annotations_are_enforced_for_free() -> None:
    @registry.register("model", "test_annotated_probe_net")
    def annotated_probe_net(
        num_classes: int, width: Annotated[int, Field(ge=4, le=64)] = 8
    ) -> object:
        raise AssertionError("never built: the check comes first")

    load_config(None, ["model.name=test_annotated_probe_net", "model.width=16"])
    with pytest.raises(ConfigError, match=r"model.width = 2: input should be greater than or"):
        load_config(None, ["model.name=test_annotated_probe_net", "model.width=2"])


def test_an_empty_or_non_utf8_config_file_is_refused(tmp_path: Path) -> None:
    empty, latin = tmp_path / "empty.yaml", tmp_path / "latin.yaml"
    empty.write_text("")
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="is not UTF-8 text; save the file as UTF-8"):
        load_config(latin)


def test_an_unknown_component_says_how_to_make_a_notebook_registration_visible() -> None:
    with pytest.raises(ConfigError, match="listed under `imports:`"):
        load_config(None, ["model.name=seed_linear"])


def test_tracker_loggers_are_off_by_default_and_take_a_short_flag() -> None:
    from brickwork.config import load_config

    config = load_config(None, check_components=False)
    assert not config.loggers.wandb.enabled and not config.loggers.mlflow.enabled
    short = load_config(None, ["loggers.mlflow=true"], check_components=False)
    assert short.loggers.mlflow.enabled and short.loggers.mlflow.log_model


def test_a_typo_in_a_tracker_key_names_the_key_and_the_nearest_valid_one() -> None:
    import pytest

    from brickwork.config import load_config
    from brickwork.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(None, ["loggers.wandb.projet=x"], check_components=False)
    assert "loggers.wandb.projet" in str(error.value) and "loggers.wandb.project" in str(
        error.value
    )
