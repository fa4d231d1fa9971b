"""Write the example's image folders from scikit-learn's digits (no download).

python examples/transfer/make_data.py OUT_DIR

OUT_DIR/source/<0..4>/*.png         every image of digits 0-4: the pretraining task
OUT_DIR/target/train/<5..9>/*.png   10 images per class of digits 5-9: the small target task
OUT_DIR/target/val/<5..9>/*.png     10 per class, for checkpoint selection
OUT_DIR/target/test/<5..9>/*.png    every other image of digits 5-9
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NUM_TRAIN, NUM_VAL = 10, 10


def main(out: Path) -> None:
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # (N, 8, 8) grey
    rng = np.random.default_rng(0)
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        if label < 5:
            parts = {"source": indices}
        else:
            parts = {
                "target/train": indices[:NUM_TRAIN],
                "target/val": indices[NUM_TRAIN : NUM_TRAIN + NUM_VAL],
                "target/test": indices[NUM_TRAIN + NUM_VAL :],
            }
        for part, chosen in parts.items():
            folder = out / part / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index], mode="L").save(folder / f"{index:04d}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
