"""What `image_folder` and `image_csv` share: the image dataset, splits and the bundle.

Images are decoded by PIL into uint8 tensors, JPEGs at a reduced scale when the input
size is far below the file's (`draft`), and resized and cropped as uint8 tensors.
A file that cannot be decoded is a `DataError` naming it; with `on_bad_image: skip`
every file is checked once when the dataset is built, the bad ones are left out and
counted (in the log and in `DataBundle.extra["num_skipped_images"]`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from brickwork.data.bundle import DataBundle
from brickwork.data.split import split_indices
from brickwork.data.transforms import (
    TransformSpec,
    build_transform,
    compose,
    default_eval_transforms,
    denormalizer,
    normalization,
)
from brickwork.errors import ConfigError, DataError

log = logging.getLogger("brickwork")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_MODES = {"RGB": 3, "L": 1}
_STATS_SAMPLES = 512

Item = tuple[Path, int]


def decode_image(path: Path, mode: str, draft_size: int | None = None) -> torch.Tensor:
    """The image at `path` as a uint8 tensor (C, H, W) with C = 3 (RGB) or 1 (L).

    With `draft_size`, a JPEG is decoded at the smallest power-of-two reduction that
    still covers `draft_size` pixels on each side (libjpeg's DCT scaling): a large photo
    bound for a small input decodes several times faster.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such image file; check the path (and data.root)")
    from PIL import Image

    try:
        with Image.open(path) as image:
            if draft_size is not None and image.format == "JPEG":
                image.draft(mode, (draft_size, draft_size))
            array = np.array(image.convert(mode))  # (H, W) or (H, W, C), a writable copy
    except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for broken files
        raise DataError(
            f"{path}: cannot decode image ({_first_line(error)}); remove or replace the file, "
            "or set data.on_bad_image: skip"
        ) from None
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


class ImageFiles(Dataset[Any]):
    """Image files with integer labels (or none, for `predict`), decoded on access."""

    def __init__(
        self,
        items: Sequence[Item] | Sequence[Path],
        transform: Callable[[torch.Tensor], torch.Tensor],
        mode: str = "RGB",
        draft_size: int | None = None,
    ) -> None:
        self.paths = [item[0] if isinstance(item, tuple) else item for item in items]
        self.targets = [item[1] for item in items if isinstance(item, tuple)]
        self.transform, self.mode, self.draft_size = transform, mode, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        image = self.transform(decode_image(self.paths[index], self.mode, self.draft_size))
        if not self.targets:
            return (image,)
        return image, self.targets[index]


@dataclass
class ImageOptions:
    """The keyword arguments `image_folder` and `image_csv` have in common."""

    image_size: int | list[int] | None = 224
    mode: str = "RGB"
    train_transforms: list[TransformSpec] | None = None
    eval_transforms: list[TransformSpec] | None = None
    normalize: str = "imagenet"
    on_bad_image: str = "error"
    model_name: str | None = None  # model.name, for normalize: model

    @property
    def draft_size(self) -> int | None:
        """Twice the input size: enough detail for crops down to a quarter of the area."""
        if self.image_size is None:
            return None
        sizes = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return 2 * max(sizes)

    def check(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"data.mode = '{self.mode}': expected RGB or L (greyscale)")
        if self.on_bad_image not in ("error", "skip"):
            raise ConfigError(f"data.on_bad_image = '{self.on_bad_image}': expected error or skip")


def stratified_split(
    items: list[Item], fraction: float, seed: int, what: str
) -> tuple[list[Item], list[Item]]:
    """Split off `fraction` of `items`, stratified by label and seeded."""
    kept, split = split_indices([label for _, label in items], fraction, seed, what)
    return [items[i] for i in kept], [items[i] for i in split]


def drop_undecodable(items: list[Item], mode: str) -> tuple[list[Item], int]:
    """Items whose files decode, and how many did not (each file is read once)."""
    good: list[Item] = []
    bad: list[Path] = []
    for item in items:
        try:
            decode_image(item[0], mode)
        except DataError:
            bad.append(item[0])
            continue
        good.append(item)
    if bad:
        log.warning("skipped %d images that cannot be decoded (first: %s)", len(bad), bad[0])
    return good, len(bad)


def build_image_bundle(
    splits: dict[str, list[Item]],
    label_names: list[str],
    options: ImageOptions,
    load_unlabeled: Callable[[Path], tuple[Dataset[Any], list[str]]] | None,
    seed: int,
) -> tuple[DataBundle, Callable[[torch.Tensor], torch.Tensor]]:
    """The bundle of image splits; also returns the eval transform for unlabelled inputs."""
    skipped = 0
    if options.on_bad_image == "skip":
        for name in list(splits):
            splits[name], count = drop_undecodable(splits[name], options.mode)
            skipped += count
    if not splits["train"]:
        raise DataError("the training split has no images; check data.root and the file list")
    channels = _MODES[options.mode]
    eval_specs = (
        options.eval_transforms
        if options.eval_transforms is not None
        else default_eval_transforms(options.image_size)
    )
    train_specs = options.train_transforms if options.train_transforms is not None else eval_specs
    eval_ops = build_transform(eval_specs, "eval_transforms")
    train_ops = build_transform(train_specs, "train_transforms")

    def dataset_stats() -> tuple[list[float], list[float]]:
        return _channel_stats(splits["train"], compose(eval_ops, None, None), options.mode, seed)

    extra: dict[str, Any] = {}
    if options.normalize == "model":  # the hf/ model's image processor (data/hf_image.py)
        from brickwork.data.hf_image import load_image_processor, processor_normalization

        extra["image_processor"] = load_image_processor(options.model_name)
        mean, std = processor_normalization(extra["image_processor"], channels)
    else:
        mean, std = normalization(options.normalize, channels, dataset_stats)
    train_tf, eval_tf = compose(train_ops, mean, std), compose(eval_ops, mean, std)
    first = ImageFiles(splits["train"][:1], eval_tf, options.mode)[0][0]
    targets = torch.tensor([label for _, label in splits["train"]], dtype=torch.long)
    bundle = DataBundle(
        train=ImageFiles(splits["train"], train_tf, options.mode, options.draft_size),
        val=ImageFiles(splits["val"], eval_tf, options.mode, options.draft_size),
        test=(
            ImageFiles(splits["test"], eval_tf, options.mode, options.draft_size)
            if splits.get("test")
            else None
        ),
        num_classes=len(label_names),
        input_shape=tuple(first.shape),
        label_names=label_names,
        train_targets=targets,
        load_unlabeled=load_unlabeled,
        denormalize=denormalizer(mean, std),
        extra={
            **extra,
            "num_skipped_images": skipped,
            "normalize": {"mean": mean, "std": std},
            "split_sizes": {k: len(v) for k, v in splits.items()},
        },
    )
    return bundle, eval_tf


def has_image_facts(fitted: dict[str, Any] | None) -> bool:
    """A run's `data.json` holds what an image bundle needs without its training images
    (written by every run since the normalisation was recorded)."""
    return bool(
        fitted and fitted.get("label_names") and fitted.get("input_shape") and "normalize" in fitted
    )


def build_fitted_image_bundle(
    fitted: dict[str, Any],
    splits: dict[str, list[Item]],
    options: ImageOptions,
    load_unlabeled: Callable[[Path], tuple[Dataset[Any], list[str]]] | None,
) -> tuple[DataBundle, Callable[[torch.Tensor], torch.Tensor]]:
    """The bundle of a finished run, from its `data.json`: the training images are not read.

    Only the splits given explicitly (an evaluate on `data.test_root`, say) are present;
    the normalisation is the one fitted in training.
    """
    mean, std = fitted["normalize"]["mean"], fitted["normalize"]["std"]
    eval_specs = (
        options.eval_transforms
        if options.eval_transforms is not None
        else default_eval_transforms(options.image_size)
    )
    eval_tf = compose(build_transform(eval_specs, "eval_transforms"), mean, std)
    input_shape = tuple(int(n) for n in fitted["input_shape"])

    def images(name: str) -> ImageFiles:
        return ImageFiles(splits.get(name, []), eval_tf, options.mode, options.draft_size)

    extra: dict[str, Any] = {"normalize": {"mean": mean, "std": std}}
    if options.normalize == "model":  # export --format hf writes it beside the weights
        from brickwork.data.hf_image import load_image_processor

        extra["image_processor"] = load_image_processor(options.model_name)

    bundle = DataBundle(
        train=images("train"),
        val=images("val"),
        test=images("test") if splits.get("test") else None,
        num_classes=len(fitted["label_names"]),
        input_shape=input_shape,
        label_names=list(fitted["label_names"]),
        load_unlabeled=load_unlabeled,
        denormalize=denormalizer(mean, std),
        extra=extra,
        example=(torch.zeros(input_shape),),
    )
    return bundle, eval_tf


def unlabeled_images(
    path: Path,
    transform: Callable[[torch.Tensor], torch.Tensor],
    mode: str,
    draft_size: int | None = None,
    skip_bad: bool = False,
) -> tuple[Dataset[Any], list[str]]:
    """A single image, or every image under a folder (recursively), for `predict`.

    `skip_bad` (`data.on_bad_image: skip`) leaves out files that cannot be decoded.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files, names = [path], [path.name]
    elif not path.is_dir():
        raise DataError(f"{path}: expected an image file or a folder of images")
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        names = [str(p.relative_to(path)) for p in files]
    if skip_bad:
        files, names = keep_decodable(files, names, mode, path)
    return ImageFiles(files, transform, mode, draft_size), names


def keep_decodable(
    files: list[Path], names: list[str], mode: str, source: Path
) -> tuple[list[Path], list[str]]:
    """The inputs whose files decode, with their names; the others counted in a warning."""
    kept = [(f, n) for f, n in zip(files, names, strict=True) if _decodes(f, mode)]
    if not kept:  # the error alone: a warning about skipping them all would say it twice
        raise DataError(f"{source}: no input image can be decoded; check the files")
    if len(kept) < len(files):
        log.warning(
            "%s: skipped %d input image(s) that cannot be decoded (data.on_bad_image: skip)",
            source,
            len(files) - len(kept),
        )
    return [f for f, _ in kept], [n for _, n in kept]


def _decodes(path: Path, mode: str) -> bool:
    try:
        decode_image(path, mode)
    except DataError:
        return False
    return True


def _channel_stats(
    items: list[Item], transform: Callable[[torch.Tensor], torch.Tensor], mode: str, seed: int
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over (a seeded sample of) the training images."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(items), generator=generator)[:_STATS_SAMPLES].tolist()
    total = squares = None
    count = 0
    for index in order:
        image = transform(decode_image(items[index][0], mode)).double()  # (C, H, W) in [0, 1]
        pixels = image.flatten(1)
        total = pixels.sum(1) if total is None else total + pixels.sum(1)
        squares = (pixels**2).sum(1) if squares is None else squares + (pixels**2).sum(1)
        count += pixels.shape[1]
    assert total is not None and squares is not None  # items is non-empty here
    mean = total / count
    std = (squares / count - mean**2).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
