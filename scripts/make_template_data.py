"""Regenerate the small data files that `brickwork new` copies into a project.

Deterministic (fixed seeds, no download), so the files in `src/brickwork/templates/`
can be checked against this script at any time:

    python scripts/make_template_data.py
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "brickwork" / "templates"

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "sports": (
        [
            "the {a} won the {b} after a late goal",
            "our {a} lost the {b} in extra time",
            "fans cheered as the {a} took the {b}",
            "the coach said the {a} trained hard for the {b}",
            "a young striker scored twice for the {a} in the {b}",
        ],
        ["home team", "visitors", "national side", "local club", "league leaders"],
    ),
    "weather": (
        [
            "expect {a} across the {b} tomorrow",
            "heavy {a} will move over the {b} tonight",
            "the forecast shows {a} for the {b} this weekend",
            "a warning for {a} was issued in the {b}",
            "after a week of {a} the {b} finally dried out",
        ],
        ["rain", "snow", "strong wind", "thunderstorms", "fog"],
    ),
    "food": (
        [
            "this {a} tastes best with fresh {b}",
            "she baked a {a} topped with {b}",
            "the recipe calls for a {a} and some {b}",
            "we ordered a spicy {a} with extra {b}",
            "add the {b} slowly and let the {a} simmer",
        ],
        ["soup", "noodle bowl", "pie", "curry", "salad"],
    ),
    "technology": (
        [
            "the new {a} ships with a faster {b}",
            "engineers fixed a bug in the {a} {b}",
            "update your {a} to get the latest {b}",
            "the {a} crashed because the {b} ran out of memory",
            "a cheaper {a} with a bigger {b} was announced",
        ],
        ["phone", "laptop", "server", "tablet", "router"],
    ),
}
SECOND_SLOT = {
    "sports": ["final", "derby", "cup match", "semifinal", "season opener"],
    "weather": ["coast", "mountains", "valley", "north", "city"],
    "food": ["herbs", "garlic", "cheese", "lemon", "ginger"],
    "technology": ["chip", "battery", "operating system", "screen", "storage"],
}


def write_text_set(folder: Path, per_topic: int = 100, seed: int = 0) -> None:
    """Short labelled sentences of four topics, built from patterns and word lists."""
    rng = random.Random(seed)
    rows = []
    for label, (patterns, first) in TOPICS.items():
        sentences = sorted(
            {p.format(a=a, b=b) for p in patterns for a in first for b in SECOND_SLOT[label]}
        )
        rows += [(text, label) for text in rng.sample(sentences, per_topic)]
    rng.shuffle(rows)
    with (folder / "sentences.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    new = [
        "the league leaders won the cup match",
        "snow is expected in the mountains tonight",
        "a curry with lemon and garlic",
        "the laptop battery ran out of memory",
    ]
    with (folder / "predict.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text"])
        writer.writerows([text] for text in new)


def _customer(rng: random.Random) -> dict[str, object]:
    plan = rng.choice(["basic", "standard", "premium"])
    tenure = rng.randint(1, 72)
    fee = round({"basic": 20, "standard": 45, "premium": 80}[plan] + rng.gauss(0, 6), 2)
    calls = min(int(rng.expovariate(0.6)), 9)
    region = rng.choice(["north", "south", "east", "west"])
    score = 0.7 * calls - 0.06 * tenure + (0.8 if plan == "basic" else 0.0) + rng.gauss(0, 0.7)
    churned = "yes" if 1 / (1 + math.exp(-score)) > 0.5 else "no"
    return {
        "tenure_months": tenure,
        "monthly_fee": fee,
        "support_calls": calls,
        "plan": plan,
        "region": region,
        "churned": churned,
    }


def write_table(folder: Path, rows: int = 600, seed: int = 0) -> None:
    """A customer table: numeric and categorical columns and a yes/no `churned` target."""
    rng = random.Random(seed)
    customers = [_customer(rng) for _ in range(rows)]
    columns = list(customers[0])
    with (folder / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(customers)
    new = [{k: v for k, v in _customer(rng).items() if k != "churned"} for _ in range(5)]
    with (folder / "predict.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns[:-1], lineterminator="\n")
        writer.writeheader()
        writer.writerows(new)


def write_digit_inputs(folder: Path) -> None:
    """Eight digits from scikit-learn's set, on its 0..16 scale, for `brickwork predict`."""
    from sklearn.datasets import load_digits

    images = load_digits().images[-8:].astype(np.float32)  # (8, 8, 8)
    np.save(folder / "predict.npy", images, allow_pickle=False)


if __name__ == "__main__":
    write_text_set(TEMPLATES / "text" / "project" / "data")
    write_table(TEMPLATES / "tabular" / "project" / "data")
    write_digit_inputs(TEMPLATES / "image" / "project" / "data")
