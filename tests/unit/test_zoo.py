"""timm/ and torchvision/ names, pretrained weights from local files, and their errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from brickwork import registry
from brickwork.config import ModelConfig
from brickwork.data.bundle import DataBundle
from brickwork.errors import ConfigError
from brickwork.models import build_model
from brickwork.models.anatomy import find_head
from brickwork.models.pretrained import load_pretrained

FACTS = DataBundle(train=[], val=[], num_classes=3, input_shape=(3, 32, 32))


def _timm_weights(tmp_path: Path, suffix: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 'pretrained' 10-class timm model's weights, saved by the test itself."""
    import timm

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_pretrained_file_loads_into_timm_model_and_reports_the_head(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, state = _timm_weights(tmp_path, suffix)
    caplog.set_level(logging.INFO, logger="brickwork")
    model = build_model(ModelConfig(name="timm/test_resnet", pretrained=str(path)), FACTS)
    own = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert all(torch.equal(own[k], state[k]) for k in backbone)
    assert own["fc.weight"].shape[0] == 3  # the head was replaced for 3 classes, not loaded
    assert "classifier head not loaded" in caplog.text and "fc.weight" in caplog.text
    assert "WARNING" not in caplog.text


def test_missing_and_unexpected_keys_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import timm

    model = timm.create_model("test_resnet", num_classes=3)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer1.")}
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "w.safetensors"))
    report = load_pretrained(model, tmp_path / "w.safetensors")
    assert report.unexpected == ["extra.weight"]
    assert report.missing and all(k.startswith("layer1.") for k in report.missing)
    assert "not in the file and keep their initial values" in caplog.text
    assert "match no model key" in caplog.text


def test_pretrained_true_offline_says_how_to_use_a_local_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"model.pretrained = true.*model.pretrained: /path/to"):
        build_model(ModelConfig(name="timm/test_resnet", pretrained=True), FACTS)


def test_pretrained_true_on_a_model_without_hub_weights_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model 'cnn' has no hub weights.*local"):
        build_model(ModelConfig(name="cnn", pretrained=True), FACTS)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_file({"something.else": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match=r"none of its 1 tensors fit the model"):
        build_model(ModelConfig(name="cnn", pretrained=str(tmp_path / "w.safetensors")), FACTS)


def test_pickled_objects_are_refused_by_weights_only_loading(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": object()}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"refuses to unpickle") as caught:
        build_model(ModelConfig(name="cnn", pretrained=str(tmp_path / "evil.pth")), FACTS)
    assert "weights_only` set to `False" not in str(caught.value)  # torch's unsafe advice
    assert "\x1b[" not in str(caught.value)


@pytest.mark.parametrize("channels", [1, 4])
def test_rgb_pretrained_first_conv_is_adapted_to_other_input_channels(
    tmp_path: Path, channels: int, caplog: pytest.LogCaptureFixture
) -> None:
    path, state = _timm_weights(tmp_path, ".safetensors")
    caplog.set_level(logging.INFO, logger="brickwork")
    facts = DataBundle(train=[], val=[], num_classes=3, input_shape=(channels, 32, 32))
    model = build_model(ModelConfig(name="timm/test_resnet", pretrained=str(path)), facts)
    own = model.state_dict()
    (first,) = [k for k, v in state.items() if v.ndim == 4 and v.shape[1] == 3]
    expected = (
        state[first].sum(1, keepdim=True)
        if channels == 1
        else state[first].repeat(1, 2, 1, 1)[:, :channels] * (3 / channels)
    )
    torch.testing.assert_close(own[first], expected)
    assert f"{first} adapted from 3 (RGB) input channels" in caplog.text
    assert "WARNING" not in caplog.text  # not skipped, not left random


def test_zoo_names_resolve_with_data_facts_and_typos_get_suggestions() -> None:
    model = build_model(
        ModelConfig(name="timm/test_resnet"),
        DataBundle([], [], num_classes=5, input_shape=(1, 16, 16)),
    )
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)  # in_chans from the data
    with pytest.raises(registry.RegistryError, match=r"did you mean `test_resnet`"):
        registry.get("model", "timm/test_resnt")
    with pytest.raises(registry.RegistryError, match=r"did you mean `resnet18`"):
        registry.get("model", "torchvision/resnet181")


def test_find_head_the_timm_way_and_by_common_names() -> None:
    import timm
    from torchvision import models

    assert find_head(timm.create_model("test_vit", num_classes=2)) == ["head"]
    assert find_head(timm.create_model("test_efficientnet", num_classes=2)) == ["classifier"]
    assert find_head(models.resnet18()) == ["fc"]
    assert find_head(models.mobilenet_v3_small()) == ["classifier"]


def test_torchvision_hub_weights_adapt_their_first_conv_to_greyscale_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`pretrained: true` offline: torchvision's own loader finds weights the test wrote
    into `$TORCH_HOME/hub/checkpoints/` under the file name it expects (it checks a hash
    only when downloading), and the RGB first convolution is summed for one channel."""
    from torchvision import models

    url = models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    hub = models.mobilenet_v3_small(weights=None).state_dict()  # 1000 classes, as on the hub
    torch.save(hub, cache / Path(url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    grey = DataBundle(train=[], val=[], num_classes=2, input_shape=(1, 64, 64))
    with caplog.at_level(logging.INFO, logger="brickwork"):
        model = build_model(
            ModelConfig(name="torchvision/mobilenet_v3_small", pretrained=True), grey
        )
    first = model.features[0][0]  # type: ignore[index]
    assert first.in_channels == 1
    assert torch.allclose(first.weight, hub["features.0.0.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(
        model.state_dict()["features.1.block.0.0.weight"], hub["features.1.block.0.0.weight"]
    )
    assert "features.0.0.weight adapted from 3 (RGB) input channels" in caplog.text
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 2)
