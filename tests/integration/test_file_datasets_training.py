"""Each file-based dataset trains end to end, and predict/evaluate speak in label names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from brickwork import fit
from brickwork.inference import evaluate_run, predict_run
from tests.unit.test_data_files import write_images

QUICK = [
    "trainer.max_epochs=1",
    "trainer.test_after_fit=false",
    "loggers.progress_bar=false",
    "loggers.tensorboard.enabled=false",
    "scheduler=null",
    "early_stopping=null",
    "checkpoint.monitor=val/loss",
    "checkpoint.mode=min",
    "data.batch_size=8",
]


def _data_section(**items: object) -> list[str]:
    return ["data={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in items.items()) + "}"]


def test_image_folder_run_saves_label_names_and_predicts_them(tmp_path: Path) -> None:
    write_images(tmp_path / "images", {"apple": 8, "pear": 8})
    write_images(tmp_path / "test", {"apple": 2, "pear": 2})
    overrides = [
        *QUICK,
        *_data_section(
            name="image_folder",
            root=str(tmp_path / "images"),
            test_root=str(tmp_path / "test"),
            image_size=16,
            batch_size=8,
            sampler="weighted",
        ),
        "model.channels=[4,8]",
        "loss.class_weights=balanced",
        "finetune.freeze=backbone",
    ]
    summary = fit(None, overrides=overrides, run_dir=Path("run"))
    assert summary["status"] == "completed"
    facts = json.loads(Path("run/data.json").read_text())
    assert facts["label_names"] == ["apple", "pear"] and facts["input_shape"] == [3, 16, 16]
    rows = predict_run(Path("run"), tmp_path / "test", Path("out.csv"))
    with open("out.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert rows == 4 and {p["label"] for p in predictions} <= {"apple", "pear"}
    assert predictions[0]["input"] == "apple/0.jpg"
    results = evaluate_run(Path("run"), split="test")
    assert results["label_names"] == ["apple", "pear"] and "test/acc" in results["metrics"]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the TensorBoard graph trace
def test_text_csv_trains_a_text_model(tmp_path: Path) -> None:
    lines = ["text,label"] + [f"great fun film {i},pos" for i in range(12)]
    lines += [f"dull boring plot {i},neg" for i in range(12)]
    (tmp_path / "reviews.csv").write_text("\n".join(lines) + "\n")
    overrides = [
        *QUICK,
        *_data_section(name="text_csv", csv=str(tmp_path / "reviews.csv"), val_fraction=0.25),
        "model={name: text_transformer, dim: 16, num_heads: 2, num_layers: 1}",
        "loggers.tensorboard.enabled=true",
        "trainer.max_epochs=3",
    ]
    summary = fit(None, overrides=overrides, run_dir=Path("run"))
    assert summary["status"] == "completed"
    assert json.loads(Path("run/data.json").read_text())["fitted"]["vocabulary"][0] == "<pad>"


def test_tabular_csv_trains_an_mlp(tmp_path: Path) -> None:
    lines = ["x,colour,label"] + [f"{i},{'red' if i % 3 else 'blue'},{i % 2}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    overrides = [
        *QUICK,
        *_data_section(name="tabular_csv", csv=str(tmp_path / "t.csv"), target="label"),
        "model={name: mlp, hidden_sizes: [8]}",
    ]
    summary = fit(None, overrides=overrides, run_dir=Path("run"))
    assert summary["status"] == "completed"
    assert json.loads(Path("run/data.json").read_text())["fitted"]["categories"] == {
        "colour": ["blue", "red"]
    }
