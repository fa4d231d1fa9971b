"""Image transforms from config: torchvision.transforms.v2 names with their arguments.

    data:
      name: image_folder
      image_size: 224
      train_transforms:                      # augmentation: training split only
        - {name: RandomResizedCrop, size: 224, scale: [0.6, 1.0]}
        - RandomHorizontalFlip
      eval_transforms: null                  # null: Resize + CenterCrop to image_size
      normalize: imagenet                    # imagenet | dataset | model | none

Each pipeline starts from the decoded image as a uint8 tensor (C, H, W), so resizing and
cropping run on small integers; it ends with the conversion to float in [0, 1] and the
normalisation, which brickwork appends itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from brickwork.errors import ConfigError
from brickwork.registry import suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TransformSpec = str | dict[str, Any]
Transform = Callable[[torch.Tensor], torch.Tensor]


def build_transform(specs: Sequence[TransformSpec], key: str) -> list[Transform]:
    """The v2 transform objects a config list names, in order.

    Each item is a name (`RandomHorizontalFlip`), `{name: X, arg: value}` or `{X: {arg: value}}`.

    Example:
        >>> build_transform([{"name": "Resize", "size": 32}, "RandomHorizontalFlip"], "t")
    """
    from torchvision.transforms import v2

    transforms: list[Transform] = []
    for index, spec in enumerate(specs):
        where = f"data.{key}[{index}]"
        name, kwargs = _parse_spec(spec, where)
        factory = getattr(v2, name, None)
        if not (isinstance(factory, type) and issubclass(factory, v2.Transform)):
            options = [n for n in dir(v2) if n[:1].isupper()]
            raise ConfigError(
                f"{where}: unknown transform '{name}'{suggest(name, options)}; "
                "names are torchvision.transforms.v2 classes"
            )
        try:
            transforms.append(factory(**kwargs))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {name}({_show(kwargs)}): {error}") from None
    return transforms


def default_eval_transforms(image_size: int | Sequence[int] | None) -> list[TransformSpec]:
    """Resize the short side, then centre-crop to `image_size` (nothing if it is None)."""
    if image_size is None:
        return []
    size = list(image_size) if isinstance(image_size, Sequence) else image_size
    return [
        {"name": "Resize", "size": size, "antialias": True},
        {"name": "CenterCrop", "size": size},
    ]


def compose(
    transforms: list[Transform], mean: Sequence[float] | None, std: Sequence[float] | None
) -> Transform:
    """Chain `transforms`, then uint8 -> float in [0, 1], then normalise (when given)."""
    from torchvision.transforms import v2

    tail: list[Transform] = [v2.ToDtype(torch.float32, scale=True)]
    if mean is not None and std is not None:
        tail.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose([*transforms, *tail])


def normalization(
    normalize: str, num_channels: int, dataset_stats: Callable[[], tuple[list[float], list[float]]]
) -> tuple[list[float] | None, list[float] | None]:
    """Mean and std for `normalize: imagenet|dataset|none`; `dataset_stats` computes the second."""
    if normalize == "none":
        return None, None
    if normalize == "imagenet":
        if num_channels == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [sum(IMAGENET_MEAN) / 3] * num_channels, [sum(IMAGENET_STD) / 3] * num_channels
    if normalize == "dataset":
        return dataset_stats()
    raise ConfigError(
        f"data.normalize = '{normalize}': expected imagenet, dataset, model (an hf/ model's "
        "image processor) or none"
    )


def denormalizer(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map a normalised batch (B, C, H, W) back to [0, 1] for image grids."""
    if mean is None or std is None:
        return lambda x: x.clamp(0, 1)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return lambda x: (x * s.to(x.device) + m.to(x.device)).clamp(0, 1)


def _parse_spec(spec: TransformSpec, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and "name" in spec:
        return str(spec["name"]), {k: v for k, v in spec.items() if k != "name"}
    if isinstance(spec, dict) and len(spec) == 1:
        name, kwargs = next(iter(spec.items()))
        if isinstance(kwargs, dict):
            return str(name), dict(kwargs)
        if kwargs is None:
            return str(name), {}
    raise ConfigError(
        f"{where} = {spec!r}: expected a transform name, {{name: Resize, size: 32}} "
        "or {Resize: {size: 32}}"
    )


def _show(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
