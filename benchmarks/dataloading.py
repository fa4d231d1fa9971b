"""Images per second: brickwork's `image_folder` pipeline vs torchvision's ImageFolder.

    python benchmarks/dataloading.py [--num-images 3000] [--workers 0 2] [--rounds 3]

Writes a folder of JPEGs (10 classes, `--source-size` pixels square, smooth content
plus noise like photos), then reads one full epoch with each pipeline, interleaved
round by round so both see the same machine load. The transforms are the same:
Resize(image_size) + CenterCrop + RandomHorizontalFlip + float in [0, 1] + ImageNet
normalisation, batch 64, shuffled. Reported: median images/s of each, and the ratio
brickwork / plain (goal: at least 1.0). `brickwork (no draft)` switches off the reduced-
scale JPEG decoding, to show how much of the difference it accounts for.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from brickwork.config import DataConfig
from brickwork.data.image_folder import build_image_folder
from brickwork.data.loader import build_dataloader

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_jpegs(root: Path, num_images: int, size: int) -> None:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size] / size
    for i in range(num_images):
        label = i % 10
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        channels = [np.sin(6 * xs + 4 * ys * (c + 1) + phase[c]) for c in range(3)]
        pixels = (np.stack(channels, -1) * 90 + 128 + rng.normal(0, 12, (size, size, 3))).clip(
            0, 255
        )
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def brickwork_loader(root: Path, image_size: int, workers: int, draft: bool) -> Any:
    transforms = [
        {"name": "Resize", "size": image_size, "antialias": True},
        {"name": "CenterCrop", "size": image_size},
        "RandomHorizontalFlip",
    ]
    bundle = build_image_folder(
        str(root), val_fraction=0.0, image_size=image_size, train_transforms=transforms
    )
    if not draft:
        bundle.train.draft_size = None  # type: ignore[attr-defined]
    config = DataConfig(batch_size=64, num_workers=workers, persistent_workers=False)
    return build_dataloader(bundle.train, config, train=True, seed=0)


def plain_loader(root: Path, image_size: int, workers: int) -> Any:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers)


def images_per_second(make_loader: Callable[[], Any]) -> float:
    loader = make_loader()
    started = time.perf_counter()
    count = 0
    for images, _ in loader:
        count += images.shape[0]
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--source-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # data loading is per-sample CPU work; keep the comparison fair
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        write_jpegs(root, args.num_images, args.source_size)
        print(
            f"{args.num_images} JPEGs of {args.source_size}px -> {args.image_size}px, "
            f"batch 64, {args.rounds} interleaved rounds, torch threads 1"
        )
        for workers in args.workers:
            pipelines: dict[str, Callable[[], Any]] = {
                "plain ImageFolder": lambda w=workers: plain_loader(root, args.image_size, w),
                "brickwork": lambda w=workers: brickwork_loader(root, args.image_size, w, True),
                "brickwork (no draft)": lambda w=workers: brickwork_loader(
                    root, args.image_size, w, False
                ),
            }
            rates: dict[str, list[float]] = {name: [] for name in pipelines}
            for round_index in range(args.rounds):
                names = list(pipelines)
                order = names if round_index % 2 == 0 else names[::-1]
                for name in order:
                    rates[name].append(images_per_second(pipelines[name]))
            medians = {name: statistics.median(values) for name, values in rates.items()}
            print(f"\nnum_workers={workers}")
            for name, median in medians.items():
                shown = ", ".join(f"{r:.0f}" for r in rates[name])
                print(f"  {name:22s} {median:8.0f} images/s  (rounds: {shown})")
            plain = medians["plain ImageFolder"]
            print(f"  ratio brickwork / plain: {medians['brickwork'] / plain:.2f}")
            no_draft = medians["brickwork (no draft)"]
            print(f"  ratio brickwork (no draft) / plain: {no_draft / plain:.2f}")


if __name__ == "__main__":
    main()
