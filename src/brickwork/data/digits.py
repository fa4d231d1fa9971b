"""scikit-learn's bundled handwritten digits: 1,797 8x8 images, ten classes, no download.

The default dataset: real data that trains in seconds on a laptop CPU. Pixels are
0..16 in the original; we scale to [0, 1] and standardise with the training split's
mean and standard deviation, so nothing about val or test leaks into training.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from brickwork.data.bundle import DataBundle
from brickwork.data.split import train_test_indices
from brickwork.errors import DataError
from brickwork.registry import register

_PIXEL_MAX = 16.0
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@register("dataset", "digits")
def build_digits(
    seed: int = 42, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> DataBundle:
    """Stratified, seeded train/val/test splits of the digits dataset."""
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"digits: val_fraction={val_fraction}, test_fraction={test_fraction}: "
            "each must be in (0, 1) and together below 1"
        )
    pixels, labels = load_digit_arrays()
    images = pixels.astype(np.float32) / _PIXEL_MAX  # (N, 8, 8) in [0, 1]
    rest, test_idx = np.arange(len(labels)), np.array([], dtype=np.int64)
    if test_fraction > 0:
        kept, taken = train_test_indices(len(rest), test_fraction, seed, labels)
        rest, test_idx = rest[kept], rest[taken]
    kept, taken = train_test_indices(
        len(rest), val_fraction / (1 - test_fraction), seed, labels[rest]
    )
    train_idx, val_idx = rest[kept], rest[taken]
    mean, std = float(images[train_idx].mean()), float(images[train_idx].std())

    def normalize(batch: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(batch) - mean) / std).unsqueeze(1)  # (N, 1, 8, 8)

    def subset(idx: np.ndarray) -> TensorDataset:
        return TensorDataset(normalize(images[idx]), torch.from_numpy(labels[idx]))

    def load_unlabeled(path: Path) -> tuple[Dataset[Any], list[str]]:
        inputs, names = read_digit_inputs(path)
        return TensorDataset(normalize(inputs)), names

    return DataBundle(
        train=subset(train_idx),
        val=subset(val_idx),
        test=subset(test_idx) if len(test_idx) else None,
        num_classes=10,
        input_shape=(1, 8, 8),
        label_names=[str(d) for d in range(10)],
        train_targets=torch.from_numpy(labels[train_idx]),
        load_unlabeled=load_unlabeled,
        denormalize=lambda x: (x * std + mean).clamp(0, 1),
    )


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The (N, 8, 8) pixels on the 0..16 scale and the N labels, as `load_digits` gives.

    Read straight from the file scikit-learn ships, found without importing it:
    `sklearn.datasets` costs 1.5 s to import, reading the file 10 ms. Should a
    scikit-learn release move the file, its loader is used instead.
    """
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    file = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if file is None or not file.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target.astype(np.int64)
    with gzip.open(file, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def read_digit_inputs(path: Path) -> tuple[np.ndarray, list[str]]:
    """Inputs for `predict`, as (N, 8, 8) floats in [0, 1], and a name for each row.

    Accepts a `.npy` array of shape (N, 8, 8) or (N, 64) on scikit-learn's 0..16
    scale, or a folder of images of any size (resized to 8x8, grey, ink bright as
    in the training data; dark-ink-on-white scans are inverted).
    """
    path = Path(path)
    if path.is_dir():
        return _read_image_folder(path)
    if path.suffix != ".npy" or not path.is_file():
        raise DataError(f"{path}: expected a .npy file or a folder of images")
    try:
        array = np.load(path, allow_pickle=False).astype(np.float32)
    except ValueError as error:
        raise DataError(f"{path}: cannot read as a numeric .npy array ({error})") from None
    if array.ndim == 2 and array.shape[1] == 64:
        array = array.reshape(-1, 8, 8)
    if array.ndim != 3 or array.shape[1:] != (8, 8):
        raise DataError(f"{path}: expected shape (N, 8, 8) or (N, 64), got {array.shape}")
    return array / _PIXEL_MAX, [str(i) for i in range(len(array))]


def _read_image_folder(folder: Path) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                grey = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(
                f"{file}: cannot decode image ({error}); remove or replace that file"
            ) from None
        pixels = np.asarray(grey, dtype=np.float32) / 255.0
        arrays.append(1.0 - pixels if pixels.mean() > 0.5 else pixels)
    return np.stack(arrays), [file.name for file in files]
