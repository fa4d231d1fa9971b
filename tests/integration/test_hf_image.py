"""Hugging Face image models: `hf/<folder>` on image files, the image processor's
normalisation, and `export --format hf` loaded back by plain transformers.

The test builds everything offline: a tiny ViT (8x8 RGB inputs, hidden size 16, 1
layer) with a ViTImageProcessor whose mean and std are neither ImageNet's nor 0.5,
saved with `save_pretrained`, and an image folder of 8x8 PNGs with two classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from brickwork import fit
from brickwork.errors import ConfigError
from tests.hf_models import save_tiny_vit

MEAN, STD = [0.2, 0.4, 0.6], [0.3, 0.2, 0.1]  # the processor's own: not ImageNet's, not 0.5


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ViT with its image processor, and a folder of 8x8 images in two classes."""
    from PIL import Image
    from transformers import ViTImageProcessor

    root = tmp_path_factory.mktemp("hf-image")
    torch.manual_seed(0)
    model = save_tiny_vit(root / "tiny-vit", num_channels=3)
    processor = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=MEAN, image_std=STD)
    processor.save_pretrained(model)
    rng = np.random.default_rng(0)
    for label, channel in (("red", 0), ("blue", 2)):
        (root / "images" / label).mkdir(parents=True)
        for index in range(10):
            pixels = rng.integers(0, 120, size=(8, 8, 3), dtype=np.uint8)
            pixels[..., channel] += 120
            Image.fromarray(pixels).save(root / "images" / label / f"{index}.png")
    return {"model": model, "images": root / "images"}


def image_config(made: dict[str, Path], **data: Any) -> dict[str, Any]:
    return {
        "name": "hf-image",
        "data": {
            "name": "image_folder",
            "root": str(made["images"]),
            "image_size": 8,
            "normalize": "model",
            "val_fraction": 0.2,
            "batch_size": 4,
            **data,
        },
        "model": {"name": f"hf/{made['model']}", "pretrained": True},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "trainer": {"max_steps": 3, "test_after_fit": False},
        "loggers": {"progress_bar": False, "tensorboard": {"enabled": False}},
    }


def test_an_hf_image_model_trains_with_its_image_processors_normalisation(
    made: dict[str, Path],
) -> None:
    from PIL import Image
    from transformers import AutoImageProcessor

    from brickwork.config import load_config
    from brickwork.data import build_data

    bundle = build_data(load_config(image_config(made)))
    assert bundle.extra["normalize"] == {"mean": MEAN, "std": STD}
    path = bundle.val.paths[0]  # type: ignore[attr-defined]
    processor = AutoImageProcessor.from_pretrained(made["model"])
    with Image.open(path) as image:
        expected = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(bundle.val[0][0], expected, rtol=0, atol=1e-6)
    config = image_config(made)
    config["trainer"] = {"max_epochs": 1, "test_after_fit": False}  # 16 images: 4 steps
    config["loggers"]["tensorboard"] = {"enabled": True, "histogram_every_n_epochs": 0}
    summary = fit(config, run_dir="run")
    assert summary["status"] == "completed" and summary["num_steps"] == 4
    assert (Path("run/hf_model") / "preprocessor_config.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path("run/tb")))
    events.Reload()  # the graph and the labelled grid read the model's output object
    assert events.Tags()["graph"] and "val/predictions" in events.Tags()["images"]


def test_hf_image_export_loads_in_plain_transformers_with_the_checkpoints_logits(
    made: dict[str, Path],
) -> None:
    """The exported folder alone (model and image processor) gives the trained logits."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from brickwork.batch import call_model, logits_of
    from brickwork.export import export_run
    from brickwork.inference import load_trained, predict

    fit(image_config(made), run_dir="run")
    result = export_run(Path("run"), "hf", Path("exported"))
    assert result["max_abs_diff"] < 1e-5
    model = AutoModelForImageClassification.from_pretrained("exported").eval()
    processor = AutoImageProcessor.from_pretrained("exported")
    assert model.config.id2label == {0: "blue", 1: "red"}
    files = sorted(made["images"].rglob("*.png"))[::5]
    images = []
    for file in files:
        with Image.open(file) as image:
            images.append(image.convert("RGB"))
    parts, _ = load_trained(Path("run"))
    dataset, _ = parts.data.load_unlabeled(made["images"])  # brickwork's own preprocessing
    ours = torch.stack([dataset[i][0] for i in range(len(dataset))])[::5]  # (4, 3, 8, 8)
    with torch.no_grad():
        plain = model(**processor(images, return_tensors="pt")).logits  # (4, 2)
        trained = logits_of(call_model(parts.model, ours))
    torch.testing.assert_close(plain, trained, rtol=0, atol=1e-5)
    rows = predict(Path("run"), files[0])  # rebuilt from the run's own hf_model/ folder
    assert rows[0]["label"] == model.config.id2label[int(plain[0].argmax())]


def test_an_image_size_the_vit_does_not_take_fails_in_one_line_before_a_run_folder(
    made: dict[str, Path],
) -> None:
    with pytest.raises(ConfigError) as raised:
        fit(image_config(made, image_size=16), run_dir="run")
    message = str(raised.value)
    assert "\n" not in message and "takes 8x8 images" in message
    assert "set data.image_size: 8" in message
    assert not Path("run").exists()


def test_normalize_model_without_an_hf_model_says_what_to_set(made: dict[str, Path]) -> None:
    config = image_config(made)
    config["model"] = {"name": "mlp"}
    with pytest.raises(ConfigError, match=r"data.normalize = 'model' takes the image processor"):
        fit(config, run_dir="run")
