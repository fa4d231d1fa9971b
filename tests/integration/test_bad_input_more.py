"""More bad input, in the style of test_bad_input.py: each mistake ends with exit code 2
and one line naming what is wrong and the fix, no traceback, and the run folder it
touches unchanged. These run in-process through `brickwork.cli.main` (cheap), against
one tiny trained run whose working folder and training data are then gone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from brickwork.loop import fit
from tests.conftest import FAST, run_cli_in_process
from tests.integration.test_resume_config import tree_digest
from tests.unit.test_data_files import write_images

# (id, CLI arguments with {run} and {files} placeholders, a fragment the one line must contain)
CASES: list[tuple[str, list[str], str]] = [
    (
        "unfreeze-at-epoch-zero",
        ["train", *FAST, "finetune.unfreeze=[{{at_epoch: 0, modules: [features.*]}}]"],
        "at_epoch",
    ),
    ("stray-argument-after-options", ["train", "--run-dir", "{files}/new", "oops"], "oops"),
    (
        "fitted-is-filled-from-a-run-not-a-config-key",
        ["train", *FAST, "data.name=tabular_csv", "data.csv=t.csv", "data.fitted={{}}"],
        "data.fitted: unknown key for dataset 'tabular_csv'",
    ),
    (
        "model-override-after-options",
        ["predict", "{run}", "--input", "{files}/in.npy", "--output", "out.csv", "model.name=mlp"],
        "inference-time keys",
    ),
    (
        "evaluate-own-split-data-gone",
        ["evaluate", "{images}", "--split", "val"],
        "relative data paths are read from",
    ),
    (
        "predict-undecodable-without-skip",
        ["predict", "{images}", "--input", "{files}/broken", "--output", "out.csv"],
        "data.on_bad_image: skip",
    ),
    (
        "predict-all-undecodable-with-skip",
        [
            "predict",
            "{images}",
            "--input",
            "{files}/broken",
            "--output",
            "out.csv",
            "data.on_bad_image=skip",
        ],
        "no input image can be decoded",
    ),
    (
        "predict-csv-missing-column",
        ["predict", "{images}", "--input", "{files}/no_column.csv", "--output", "out.csv"],
        "no column 'image'",
    ),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A digits run, an image_csv run whose training folder is deleted, and input files."""
    root = tmp_path_factory.mktemp("bad-more")
    files = root / "files"
    files.mkdir()
    np.save(files / "in.npy", np.zeros((2, 8, 8), dtype=np.float32))
    (files / "broken").mkdir()
    (files / "broken" / "a.jpg").write_bytes(b"not an image")
    (files / "no_column.csv").write_text("path\nx.png\n")
    fit(None, overrides=[*FAST, "trainer.max_epochs=1"], run_dir=root / "run")
    project = root / "project"
    images = write_images(project / "pictures", {"a": 4, "b": 4})
    rows = ["image,label", *(f"{p.parent.name}/{p.name},{p.parent.name}" for p in images)]
    (project / "pictures" / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        data = "{name: image_csv, csv: pictures/train.csv, image_size: 16, batch_size: 4}"
        overrides = [*FAST, "trainer.max_epochs=1", f"data={data}", "model.channels=[4,8]"]
        fit(None, overrides=overrides, run_dir=root / "images")
    shutil.rmtree(project / "pictures")  # the working folder stays, its data do not
    return {"run": root / "run", "images": root / "images", "files": files}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_more_bad_input_exits_2_with_one_fix_it_line(
    case: tuple[str, list[str], str], places: dict[str, Path]
) -> None:
    _, template, fragment = case
    args = [a.format(**{k: str(v) for k, v in places.items()}) for a in template]
    before = {k: tree_digest(v) for k, v in places.items() if k != "files"}
    result = run_cli_in_process(args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert ": error: " in lines[0] and fragment in lines[0], lines[0]
    assert {k: tree_digest(v) for k, v in places.items() if k != "files"} == before
    assert not Path("out.csv").exists()
