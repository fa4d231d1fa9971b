"""A finished run folder is self-contained: with its training data gone and from another
folder, `predict` and `export` still work (labels, normalisation, scaling, categories,
vocabulary and an hf/ model's tokenizer come from the run folder), and `evaluate` on the
run's own split says in one line that the data are gone and where it looked.

Each case trains for one tiny epoch in `project/` with relative data paths, predicts once
with the data in place, deletes the data, moves to another folder and predicts again:
the rows must be identical.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from brickwork import fit
from brickwork.errors import DataError
from brickwork.export import export_run
from brickwork.inference import evaluate_run, predict
from tests.integration.test_file_datasets_training import QUICK as FILE_QUICK
from tests.unit.test_data_files import write_images

# The file-dataset trainings' one quick epoch, at each dataset's own default batch size.
QUICK = [o for o in FILE_QUICK if not o.startswith("data.batch_size=")]


def _data(**items: object) -> str:
    return "data={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in items.items()) + "}"


def _image_folder(project: Path) -> tuple[list[str], str]:
    write_images(project / "pictures", {"apple": 6, "pear": 6})
    write_images(project / "new", {"x": 2})
    data = _data(name="image_folder", root="pictures", image_size=16, batch_size=4)
    return [data, "model.channels=[4,8]"], "new"


def _image_csv(project: Path) -> tuple[list[str], str]:
    files = write_images(project / "pictures", {"apple": 6, "pear": 6})
    rows = [["image", "label"]]
    rows += [[str(f.relative_to(project / "pictures")), f.parent.name] for f in files]
    _write_csv(project / "pictures" / "train.csv", rows)
    (project / "new").mkdir()
    for f in files[:3]:
        shutil.copy(f, project / "new" / f.name)
    _write_csv(project / "new" / "inputs.csv", [["image"]] + [[f.name] for f in files[:3]])
    data = _data(name="image_csv", csv="pictures/train.csv", image_size=16, batch_size=4)
    return [data, "model.channels=[4,8]", "data.mode=L"], "new/inputs.csv"


def _tabular_csv(project: Path) -> tuple[list[str], str]:
    rows = [["x", "colour", "label"]]
    rows += [[str(i), "red" if i % 3 else "blue", "odd" if i % 2 else "even"] for i in range(30)]
    _write_csv(project / "table.csv", rows)
    _write_csv(project / "new.csv", [["x", "colour"], ["4", "red"], ["7", "blue"], ["9", "green"]])
    data = _data(name="tabular_csv", csv="table.csv", target="label", batch_size=8)
    return [data, "model={name: mlp, hidden_sizes: [8]}"], "new.csv"


def _text_csv(project: Path) -> tuple[list[str], str]:
    rows = [["text", "label"]]
    rows += [[f"좋은 영화 {i}", "pos"] for i in range(10)]
    rows += [[f"지루한 줄거리 {i}", "neg"] for i in range(10)]
    _write_csv(project / "reviews.csv", rows)
    _write_csv(project / "new.csv", [["text"], ["좋은 줄거리"], ["지루한 영화"]])
    data = _data(name="text_csv", csv="reviews.csv", tokenizer="characters", batch_size=4)
    return [data, "model={name: text_rnn, embedding_dim: 8, hidden_size: 8}"], "new.csv"


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


CASES: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "image_folder": _image_folder,
    "image_csv": _image_csv,
    "tabular_csv": _tabular_csv,
    "text_csv": _text_csv,
}
EXPORTS = {"image_folder": "torchscript", "image_csv": "safetensors", "tabular_csv": "safetensors"}


def _train_then_remove_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], inputs: str
) -> tuple[Path, Path, list[dict[str, object]]]:
    """Train in project/, predict, delete everything but the run and the inputs, cd away."""
    project = tmp_path / "project"
    monkeypatch.chdir(project)
    summary = fit(None, overrides=[*QUICK, *overrides], run_dir="run")
    assert summary["status"] == "completed"
    before = predict("run", inputs)
    top = Path(inputs).parts[0]  # the inputs file or folder, with what it names
    (tmp_path / "inputs").mkdir()
    shutil.move(project / top, tmp_path / "inputs" / top)
    shutil.move(project / "run", tmp_path / "run")
    shutil.rmtree(project)  # the training data, and the working folder, are gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path / "run", tmp_path / "inputs" / inputs, before


@pytest.mark.parametrize("kind", list(CASES))
def test_a_run_predicts_and_exports_with_its_training_data_gone(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    overrides, inputs = CASES[kind](tmp_path / "project")
    run, kept, before = _train_then_remove_data(tmp_path, monkeypatch, overrides, inputs)
    after = predict(run, kept)
    assert [r["label"] for r in after] == [r["label"] for r in before]
    assert [r["probability"] for r in after] == pytest.approx([r["probability"] for r in before])
    assert [r["input"] for r in after] == [r["input"] for r in before]
    if kind in EXPORTS:
        result = export_run(run, EXPORTS[kind], tmp_path / "exported" / "model.bin")
        assert result["max_abs_diff"] < 1e-4 and Path(result["path"]).is_file()


def test_evaluate_on_a_new_labelled_file_needs_only_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    overrides, _ = _tabular_csv(tmp_path / "project")
    rows = [["x", "colour", "label"], ["4", "red", "even"], ["7", "blue", "odd"]]
    _write_csv(tmp_path / "project" / "labelled.csv", rows)
    run, _, _ = _train_then_remove_data(tmp_path, monkeypatch, overrides, "labelled.csv")
    moved = tmp_path / "inputs" / "labelled.csv"
    results = evaluate_run(run, split="test", overrides=[f"data.test_csv={moved}"])
    assert results["label_names"] == ["even", "odd"] and "test/acc" in results["metrics"]
    assert sum(map(sum, results["confusion_matrix"])) == 2


def test_evaluate_on_the_runs_own_split_says_where_the_missing_data_were_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "project").mkdir()
    overrides, inputs = _tabular_csv(tmp_path / "project")
    run, _, _ = _train_then_remove_data(tmp_path, monkeypatch, overrides, inputs)
    (tmp_path / "project").mkdir()  # the working folder is back, its data are not
    with pytest.raises(DataError) as caught:
        evaluate_run(run, split="val")
    message = str(caught.value)
    assert "table.csv" in message and str(tmp_path / "project") in message
    assert "\n" not in message


def test_an_hf_text_run_predicts_and_exports_with_model_and_data_gone(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("peft")
    from tests.hf_models import write_topic_csv

    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(tiny_bert, project / "bert")
    write_topic_csv(project / "topics.csv")
    _write_csv(project / "new.csv", [["text"], ["Parse a URL into parts."], ["이 라이브러리는"]])
    overrides = [
        _data(name="text_csv", csv="topics.csv", tokenizer="model", max_length=32, batch_size=8),
        "model={name: hf/bert, pretrained: true}",
        "optimizer.lr=0.003",
    ]
    run, kept, before = _train_then_remove_data(tmp_path, monkeypatch, overrides, "new.csv")
    assert (run / "hf_model" / "tokenizer.json").is_file()
    after = predict(run, kept)
    assert [r["label"] for r in after] == [r["label"] for r in before]
    assert [r["probability"] for r in after] == pytest.approx([r["probability"] for r in before])
    result = export_run(run, "hf", tmp_path / "exported")
    assert result["max_abs_diff"] < 1e-4 and (tmp_path / "exported" / "tokenizer.json").is_file()


def test_a_run_with_an_hf_tokenizer_folder_predicts_with_that_folder_gone(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.tokenizer: hf:<folder>` with brickwork's own model: the run keeps a copy."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(tiny_bert, project / "bert")
    overrides, inputs = _text_csv(project)
    overrides = [overrides[0].replace('"characters"', '"hf:bert"'), *overrides[1:]]
    run, kept, before = _train_then_remove_data(tmp_path, monkeypatch, overrides, inputs)
    assert (run / "hf_tokenizer" / "tokenizer_config.json").is_file()
    assert not (tmp_path / "project").exists()  # the tokenizer's own folder went with it
    after = predict(run, kept)
    assert [r["label"] for r in after] == [r["label"] for r in before]
    assert [r["probability"] for r in after] == pytest.approx([r["probability"] for r in before])
