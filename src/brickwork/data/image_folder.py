"""`image_folder`: torchvision's ImageFolder layout, one sub-folder per class.

    data:
      name: image_folder
      root: data/train            # data/train/cat/001.jpg, data/train/dog/002.png, ...
      val_root: null              # a folder of the same layout, or null: a seeded
      val_fraction: 0.15          #   stratified split of root
      test_root: null             # likewise, with test_fraction (0: no test split)
      image_size: 224

Classes are the sub-folder names of `root`, sorted; they are the run's label names.
A val or test folder with a class that `root` lacks is an error naming the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from brickwork.data.bundle import DataBundle
from brickwork.data.image import (
    IMAGE_SUFFIXES,
    ImageOptions,
    Item,
    build_fitted_image_bundle,
    build_image_bundle,
    has_image_facts,
    stratified_split,
    unlabeled_images,
)
from brickwork.data.transforms import TransformSpec
from brickwork.errors import DataError
from brickwork.registry import register


@register("dataset", "image_folder")
def build_image_folder(
    root: str,
    val_root: str | None = None,
    test_root: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    image_size: int | list[int] | None = 224,
    mode: str = "RGB",
    train_transforms: list[TransformSpec] | None = None,
    eval_transforms: list[TransformSpec] | None = None,
    normalize: str = "imagenet",
    on_bad_image: str = "error",
    seed: int = 42,
    model_name: str | None = None,
    fitted: dict[str, Any] | None = None,
) -> DataBundle:
    """Train/val/test splits of class folders, decoded and transformed on access.

    `model_name` is filled from `model.name`, for `normalize: model`. `fitted` is filled
    by brickwork from a finished run's `data.json` (predict, export): then `root` is not
    read, and only `val_root`/`test_root`, if given, are scanned.
    """
    options = ImageOptions(
        image_size, mode, train_transforms, eval_transforms, normalize, on_bad_image, model_name
    )
    options.check()

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        skip = options.on_bad_image == "skip"
        return unlabeled_images(path, eval_transform, options.mode, options.draft_size, skip)

    if fitted is not None and has_image_facts(fitted):
        given = {"val": val_root, "test": test_root}
        explicit = {
            split: scan_class_folders(Path(root_of), fitted["label_names"], f"{split}_root")
            for split, root_of in given.items()
            if root_of is not None
        }
        bundle, eval_transform = build_fitted_image_bundle(
            fitted, explicit, options, load_unlabeled
        )
        return bundle
    label_names = class_folders(Path(root), "root")
    train = scan_class_folders(Path(root), label_names, "root")
    splits: dict[str, list[Item]] = {}
    if test_root is not None:
        splits["test"] = scan_class_folders(Path(test_root), label_names, "test_root")
    else:
        train, splits["test"] = stratified_split(train, test_fraction, seed, "test")
    if val_root is not None:
        splits["val"] = scan_class_folders(Path(val_root), label_names, "val_root")
    else:
        train, splits["val"] = stratified_split(train, val_fraction, seed, "val")
    splits["train"] = train
    bundle, eval_transform = build_image_bundle(splits, label_names, options, load_unlabeled, seed)
    return bundle


def class_folders(root: Path, key: str) -> list[str]:
    """Sorted class names: the sub-folders of `root`."""
    if not root.is_dir():
        raise DataError(
            f"data.{key} = '{root}': no such folder (relative paths start at {Path.cwd()}); "
            "point it at a folder with one sub-folder per class"
        )
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"data.{key} = '{root}': no class sub-folders; expected {root}/<class>/*")
    return names


def scan_class_folders(root: Path, label_names: list[str], key: str) -> list[Item]:
    """(path, label index) for every image under `root/<class>/`, in a stable order."""
    present = class_folders(root, key)
    unseen = [name for name in present if name not in label_names]
    if unseen:
        raise DataError(
            f"data.{key} = '{root}': class folder '{unseen[0]}' is not among the training "
            f"classes ({', '.join(label_names)}); add it to the training data or remove it"
        )
    items: list[Item] = []
    for name in present:
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        items += [(path, label_names.index(name)) for path in files]
    if not items:
        raise DataError(
            f"data.{key} = '{root}': no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return items
