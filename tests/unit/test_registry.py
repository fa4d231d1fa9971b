"""The registry: user components by name, clear errors for unknown names."""

from __future__ import annotations

import pytest
from torch import nn

from brickwork import registry
from brickwork.config import load_config
from brickwork.errors import ConfigError


def test_builtins_are_listed_per_kind() -> None:
    assert {"mlp", "cnn"} <= set(registry.available("model"))
    assert {"sgd", "adam", "adamw"} <= set(registry.available("optimizer"))
    assert {"step", "cosine", "onecycle", "reduce_on_plateau"} <= set(
        registry.available("scheduler")
    )
    assert {"cross_entropy", "mse"} <= set(registry.available("loss"))
    assert {"accuracy", "f1_macro", "top_k_accuracy"} <= set(registry.available("metric"))


def test_a_registered_model_is_built_with_data_facts() -> None:
    @registry.register("model", "test_tiny_linear")
    class TinyLinear(nn.Module):
        def __init__(self, num_classes: int, width: int = 4) -> None:
            super().__init__()
            self.width, self.num_classes = width, num_classes

    built = registry.build("model", "test_tiny_linear", {"width": 7}, provided={"num_classes": 3})
    assert (built.width, built.num_classes) == (7, 3)


def test_registering_a_different_factory_under_a_taken_name_fails() -> None:
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register("model", "cnn")(lambda: None)


def test_a_missing_required_argument_is_a_config_error() -> None:
    @registry.register("model", "test_needs_depth")
    def needs_depth(depth: int) -> nn.Module:
        return nn.Linear(depth, 1)

    with pytest.raises(ConfigError, match="depth"):
        registry.build("model", "test_needs_depth", {})


def test_imports_file_registers_a_project_model(tmp_path) -> None:
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "from brickwork import register\n"
        "@register('model', 'test_project_net')\n"
        "class ProjectNet(nn.Sequential):\n"
        "    def __init__(self, input_shape, num_classes, width=8):\n"
        "        super().__init__(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),\n"
        "                         nn.Linear(width, num_classes))\n"
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "imports: [my_models.py]\nmodel:\n  name: test_project_net\n  width: 5\n"
    )
    config = load_config(config_path)
    assert config.model.name == "test_project_net"
    with pytest.raises(ConfigError, match=r"did you mean `model\.width`"):
        load_config(config_path, ["model.widht=3"])
