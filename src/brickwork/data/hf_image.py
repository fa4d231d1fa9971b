"""`data.normalize: model`: an `hf/` image model's own image processor sets the normalisation.

    data:
      name: image_folder
      root: data/train
      image_size: 224               # the size the model was trained at (its config says)
      normalize: model              # the mean and std of the model folder's image processor
    model:
      name: hf/models/tiny-vit      # saved with save_pretrained, with its image processor

A pretrained vision Transformer expects its inputs scaled exactly as in pre-training;
the image processor saved beside the weights (`preprocessor_config.json`) is the one
source of truth for that, as the tokenizer is for text (`data.tokenizer: model`).
brickwork's own pipeline does the rest (uint8 resize and crop, then /255 and the
processor's mean and std), so `predict` and the exported folder preprocess alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brickwork.errors import ConfigError


def load_image_processor(model_name: str | None) -> Any:
    """`AutoImageProcessor.from_pretrained` of the `hf/` model, with one-line errors."""
    if model_name is None or not model_name.startswith("hf/"):
        raise ConfigError(
            f"data.normalize = 'model' takes the image processor of an hf/ model, and model.name "
            f"is '{model_name}'; set model.name: hf/<folder or hub id>, or data.normalize: imagenet"
        )
    source = model_name.removeprefix("hf/")
    try:
        from transformers import AutoImageProcessor
    except ImportError:
        raise ConfigError(
            "data.normalize = 'model' needs the transformers package: pip install 'brickwork[hf]'"
        ) from None
    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        from brickwork.models.huggingface import offline_hint

        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        if Path(source).is_dir() and not (Path(source) / "preprocessor_config.json").is_file():
            reason = "the folder has no preprocessor_config.json"
        fix = (
            "save one there with AutoImageProcessor's save_pretrained, or set data.normalize: "
            "imagenet"
            if Path(source).is_dir()
            else offline_hint(source, image=True)
        )
        raise ConfigError(
            f"data.normalize = 'model' (model.name = {model_name}): cannot load an image "
            f"processor from '{source}' ({reason or type(error).__name__}); {fix}"
        ) from None


def processor_normalization(
    processor: Any, num_channels: int
) -> tuple[list[float] | None, list[float] | None]:
    """The processor's mean and std for `num_channels` channels; (None, None) if it has none.

    A processor that rescales by anything but 1/255 would not match brickwork's
    uint8 -> [0, 1] step, so it is refused rather than silently differing.
    """
    if getattr(processor, "do_rescale", True) and not _is_one_over_255(
        getattr(processor, "rescale_factor", 1 / 255)
    ):
        raise ConfigError(
            f"data.normalize = 'model': the image processor rescales by "
            f"{processor.rescale_factor} (brickwork scales by 1/255); set data.normalize: dataset"
        )
    if not getattr(processor, "do_normalize", False):
        return None, None
    mean, std = _per_channel(processor.image_mean), _per_channel(processor.image_std)
    if len(mean) == num_channels and len(std) == num_channels:
        return mean, std
    if num_channels == 1:  # greyscale data, an RGB processor: the channels' average
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    raise ConfigError(
        f"data.normalize = 'model': the image processor normalises {len(mean)} channels and the "
        f"data have {num_channels}; set data.mode: {'RGB' if len(mean) == 3 else 'L'}"
    )


def _per_channel(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]


def _is_one_over_255(factor: Any) -> bool:
    return abs(float(factor) - 1 / 255) < 1e-9
