"""Bad input, nothing lost: each mistake through the real CLI ends with exit code 2 and
one line saying what is wrong and how to fix it, no traceback, and every existing run
folder byte-for-byte unchanged.

All cases run once, in one module fixture; each case is then its own test item. Most
run through `cli.main` in this process (output caught at the file-descriptor level); the
few in `IN_A_PROCESS` run as real subprocesses, so the contract is also checked on what
a shell sees from a fresh interpreter: a config error, a data error found after torch
loaded, a full disk, an undecodable image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch

from brickwork.checkpoint import MANIFEST_FILE, MODEL_FILE
from brickwork.loop import fit
from tests.conftest import FAST, run_cli, run_cli_in_process
from tests.integration.test_resume_config import tree_digest
from tests.integration.test_resume_exact import StopAtStep
from tests.mount import remount_read_only, tmpfs

pytestmark = pytest.mark.slow

# (id, CLI arguments with {placeholders}, a fragment the one line must contain)
CASES: list[tuple[str, list[str], str]] = [
    ("malformed-yaml", ["train", "{files}/broken.yaml"], "fix the YAML syntax"),
    ("yaml-not-a-mapping", ["train", "{files}/list.yaml"], "expected a mapping"),
    ("missing-config-file", ["train", "{files}/nope.yaml"], "config file not found"),
    ("unknown-top-level-key", ["train", "modle.name=mlp"], "did you mean `model`"),
    ("unknown-nested-key", ["train", "trainer.max_epoch=3"], "trainer.max_epochs"),
    ("unknown-deep-key", ["train", "loggers.tensorboard.enabeld=false"], "enabled"),
    ("unknown-model-kwarg", ["train", "model.chanels=[8]"], "model.channels"),
    ("unknown-model-name", ["train", "model.name=resnet9000"], "resnet9000"),
    ("unknown-metric", ["train", "metrics=[accurcy]"], "accuracy"),
    ("wrong-type-int", ["train", "trainer.max_epochs=abc"], "trainer.max_epochs = 'abc'"),
    ("wrong-type-list", ["train", "data.batch_size=[1,2]"], "data.batch_size"),
    ("zero-batch-size", ["train", "data.batch_size=0"], "greater than 0"),
    ("negative-lr", ["train", "optimizer.lr=-1"], "optimizer.lr"),
    ("bad-precision", ["train", "trainer.precision=fp8"], "'32', 'bf16' or '16'"),
    ("bad-device", ["train", "trainer.device=tpu"], "expected auto, cpu"),
    ("bad-signal", ["train", "trainer.stop_signals=[SIGFOO]"], "SIGFOO"),
    ("bad-nonfinite-mode", ["train", "trainer.on_nonfinite=maybe"], "'stop' or 'skip'"),
    ("zero-every-n-steps", ["train", "checkpoint.every_n_steps=0"], "checkpoint.every_n_steps"),
    ("no-stop-condition", ["train", "trainer.max_epochs=null"], "trainer.max_steps"),
    ("bad-override-syntax", ["train", "trainer..max_epochs=2"], "expected key=value"),
    ("bad-run-name", ["train", "name=a/b"], "name = 'a/b': the name becomes a folder"),
    ("missing-import", ["train", "imports=[no_such_module_xyz]"], "no_such_module_xyz"),
    ("bad-data-fraction", ["train", "data.val_fraction=1.5", *FAST], "val_fraction=1.5"),
    (
        "label-out-of-range",
        ["train", "{files}/bad_labels.yaml", "loggers.tensorboard.enabled=false"],
        "label 15 is outside",
    ),
    ("resume-missing-folder", ["train", "--resume", "{files}/no-such-run"], "no such run"),
    ("resume-not-a-run", ["train", "--resume", "{files}/empty"], "no checkpoint found"),
    ("resume-with-run-dir", ["train", "--resume", "{stopped}", "--run-dir", "x"], "drop --run-dir"),
    ("resume-force-alone", ["train", "--resume-force"], "only applies with --resume"),
    ("run-dir-not-empty", ["train", "--run-dir", "{finished}", *FAST], "not empty"),
    (
        "resume-changes-math",
        ["train", "--resume", "{stopped}", "data.batch_size=32"],
        "--resume-force",
    ),
    (
        "resume-other-model",
        ["train", "--resume", "{stopped}", "--resume-force", "model.channels=[4,8]"],
        "does not fit",
    ),
    (
        "evaluate-other-models-checkpoint",
        ["evaluate", "{finished}", "--checkpoint", "{other}/checkpoints/last"],
        "do not fit",
    ),
    ("truncated-checkpoint", ["train", "--resume", "{truncated}"], "truncated"),
    (
        "truncated-checkpoint-evaluate",
        ["evaluate", "{truncated}", "--checkpoint", "last"],
        "truncated",
    ),
    ("newer-format-version", ["evaluate", "{newer}", "--checkpoint", "last"], "upgrade brickwork"),
    ("evaluate-not-a-run", ["evaluate", "{files}/empty"], "not a brickwork run folder"),
    ("export-not-a-run", ["export", "{files}/empty"], "not a brickwork run folder"),
    (
        "predict-missing-input",
        ["predict", "{finished}", "--input", "{files}/none", "--output", "o.csv"],
        "no such file",
    ),
    (
        "predict-undecodable-image",
        ["predict", "{finished}", "--input", "{files}/images", "--output", "o.csv"],
        "cannot decode image",
    ),
    (
        "predict-wrong-array-shape",
        ["predict", "{finished}", "--input", "{files}/wrong.npy", "--output", "o.csv"],
        "expected shape",
    ),
    (
        "unwritable-run-dir",
        ["train", "--run-dir", "/proc/version/run", *FAST],
        "cannot write the run folder",
    ),
    ("read-only-run-dir", ["train", "--run-dir", "{readonly}/run", *FAST], "Read-only file system"),
    (
        "full-disk",
        [
            "train",
            "--run-dir",
            "{tiny}/run",
            "checkpoint.every_n_steps=1",
            "trainer.max_steps=3",
            "loggers.progress_bar=false",
            "loggers.tensorboard.enabled=false",
        ],
        "No space left on device",
    ),
]
# Issue 9: each of these gave a traceback, trained on a silent default, or wrote over a
# user's file before.
TAB = ["data.name=tabular_csv", "data.target=kind", "model.name=mlp"]
CASES += [
    ("config-not-utf8", ["train", "{files}/latin.yaml"], "is not UTF-8 text"),
    ("config-empty", ["train", "{files}/empty.yaml"], "the config file is empty"),
    ("override-named-not-file", ["train", "trainer.max_epochs=-1"], "override trainer.max_epochs"),
    ("betas-one-value", ["train", "optimizer.betas=[0.9]"], "optimizer.betas[1]"),
    ("negative-hidden-size", ["train", "model.name=mlp", "model.hidden_sizes=[-5]"], "[0] = [-5]"),
    ("huge-batch-size", ["train", "data.batch_size=100000000000000000000"], "data.batch_size"),
    ("label-smoothing-2", ["train", "loss.label_smoothing=2"], "loss.label_smoothing = 2"),
    ("batch-size-boolean", ["train", "data.batch_size=true"], "got a boolean"),
    (
        "negative-warmup",
        ["train", "scheduler.name=cosine", "scheduler.warmup_steps=-10"],
        "scheduler.warmup_steps = -10",
    ),
    ("dropout-one", ["train", "model.dropout=1.0"], "model.dropout = 1.0"),
    (
        "unknown-model-from-a-notebook",
        ["train", "model.name=seed_linear"],
        "listed under `imports:`",
    ),
    (
        "pretrained-junk-safetensors",
        ["train", "model.pretrained={files}/junk.safetensors"],
        "not a readable safetensors",
    ),
    (
        "pretrained-pickle-safetensors",
        ["train", "model.pretrained={files}/pickle.safetensors"],
        "is a pickle",
    ),
    ("pretrained-pickled-checkpoint", ["train", "model.pretrained={files}/ck"], "is a pickle"),
    (
        "pretrained-objects-pth",
        ["train", "model.pretrained={files}/objects.pth"],
        "refuses to unpickle",
    ),
    (
        "unfreeze-matches-nothing",
        ["train", "finetune.unfreeze=[{{at_epoch: 40, modules: [featurs.*]}}]"],
        "'featurs.*' matches no parameter",
    ),
    (
        "inspect-unfreeze-matches-nothing",
        ["inspect", "finetune.unfreeze=[{{at_epoch: 40, modules: [featurs.*]}}]"],
        "'featurs.*' matches no parameter",
    ),
    ("tabular-stray-text", ["train", *TAB, "data.csv={files}/na.csv"], "na_values"),
    ("tabular-empty-label", ["train", *TAB, "data.csv={files}/nolabel.csv"], "kind is empty"),
    (
        "tabular-missing-error",
        ["train", *TAB, "data.csv={files}/gap.csv", "data.missing=error"],
        "data.missing is 'error'",
    ),
    (
        "image-csv-missing-test-file",
        [
            "train",
            "data.name=image_csv",
            "data.csv={files}/img/train.csv",
            "data.test_csv={files}/img/test.csv",
            "data.image_size=8",
        ],
        "do not exist",
    ),
    (
        "export-over-a-users-config",
        ["export", "{finished}", "--output", "{files}/deploy/model.safetensors"],
        "config.yaml: the file already exists",
    ),
    (
        "predict-over-a-users-file",
        ["predict", "{finished}", "--input", "{files}/images", "--output", "{files}/taken.csv"],
        "the file already exists",
    ),
    (
        "predict-model-override",
        [
            "predict",
            "{finished}",
            "model.channels=[4]",
            "--input",
            "{files}/images",
            "--output",
            "p.csv",
        ],
        "inference-time keys",
    ),
    (
        "evaluate-optimizer-override",
        ["evaluate", "{finished}", "optimizer.lr=1"],
        "inference-time keys",
    ),
    ("evaluate-no-checkpoint-yet", ["evaluate", "{nocheckpoint}"], "saved no checkpoint"),
    ("doctor-missing-config", ["doctor", "{files}/nope.yaml"], "config file not found"),
    ("doctor-bad-budget", ["doctor", "--find-batch-size", "--memory-budget", "2XB"], "2GiB"),
    ("doctor-budget-without-search", ["doctor", "--memory-budget", "2GiB"], "--find-batch-size"),
    ("doctor-foreign-output", ["doctor", "--output", "{files}/list.yaml"], "not written by"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-unavailable", ["train", "trainer.device=cuda"], "CUDA is not available"))
try:
    import onnxruntime  # noqa: F401
except ImportError:
    CASES.append(
        ("export-onnx-not-installed", ["export", "{finished}", "--format", "onnx"], "pip install")
    )

IN_A_PROCESS = {"malformed-yaml", "label-out-of-range", "full-disk", "predict-undecodable-image"}

# A user-facing fix reads like one of these.
FIX_HINT = re.compile(
    r"did you mean|expected|valid keys|it takes|use |pass |set |fix |choose|drop |add |free |"
    r"upgrade|start a new|make the|check|should be|input should|must be|greater than|"
    r"resume|install|outside|available|remove|save |fill |omit |list |refuses"
)

BAD_LABELS_MODULE = """
import torch
from torch.utils.data import TensorDataset

from brickwork import register
from brickwork.data import DataBundle


@register("dataset", "bad_labels")
def bad_labels(seed: int = 0) -> DataBundle:
    inputs, labels = torch.zeros(16, 1, 8, 8), torch.arange(16)  # labels 10..15 do not exist
    data = TensorDataset(inputs, labels)
    return DataBundle(train=data, val=data, num_classes=10, input_shape=(1, 8, 8),
                      train_targets=labels)
"""


def _write_files(files: Path) -> None:
    files.mkdir()
    (files / "broken.yaml").write_text("model: [unclosed\n")
    (files / "list.yaml").write_text("- a\n- b\n")
    (files / "empty").mkdir()
    (files / "images").mkdir()
    (files / "images" / "scan.png").write_bytes(b"this is not a png")
    np.save(files / "wrong.npy", np.zeros((3, 5), dtype=np.float32))
    (files / "baddata.py").write_text(textwrap.dedent(BAD_LABELS_MODULE))
    (files / "bad_labels.yaml").write_text(
        "name: badlabels\nimports: [baddata]\ndata: {name: bad_labels}\nmodel: {name: mlp}\n"
    )
    (files / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (files / "empty.yaml").write_text("")
    (files / "junk.safetensors").write_bytes(b"not safetensors at all, just text")
    torch.save({"w": torch.zeros(2)}, files / "pickle.safetensors")
    (files / "ck").mkdir()
    torch.save({"w": torch.zeros(2)}, files / "ck" / "model.safetensors")
    torch.save({"w": torch.zeros(2), "path": Path("x")}, files / "objects.pth")
    table = ["width,kind"] + [f"{i},{'ab'[i % 2]}" for i in range(12)]
    (files / "na.csv").write_text("\n".join([*table[:5], "n/a,a", *table[5:]]) + "\n")
    (files / "nolabel.csv").write_text("\n".join([*table, "3,"]) + "\n")
    (files / "gap.csv").write_text("\n".join([*table, ",a"]) + "\n")
    (files / "img").mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(files / "img" / f"{i}.png")
    (files / "img" / "train.csv").write_text(
        "image,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(4))
    )
    (files / "img" / "test.csv").write_text("image,label\n0.png,a\ngone.png,b\n")
    (files / "deploy").mkdir()
    (files / "deploy" / "config.yaml").write_text("my own config\n")
    (files / "taken.csv").write_text("my results\n")


def _make_runs(existing: Path) -> dict[str, Path]:
    runs = {name: existing / name for name in ("finished", "stopped", "other")}
    fit(overrides=[*FAST, "trainer.max_steps=3"], run_dir=runs["finished"])
    fit(overrides=FAST, run_dir=runs["stopped"], callbacks=[StopAtStep(3)])
    fit(overrides=[*FAST, "trainer.max_steps=2", "model.channels=[4,8]"], run_dir=runs["other"])
    runs["nocheckpoint"] = existing / "nocheckpoint"
    runs["nocheckpoint"].mkdir()
    shutil.copy(runs["finished"] / "config.yaml", runs["nocheckpoint"] / "config.yaml")
    runs["truncated"], runs["newer"] = existing / "truncated", existing / "newer"
    shutil.copytree(runs["stopped"], runs["truncated"], symlinks=True)
    shutil.copytree(runs["stopped"], runs["newer"], symlinks=True)
    weights = runs["truncated"] / "checkpoints" / "last" / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    manifest_path = runs["newer"] / "checkpoints" / "last" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    return runs


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("bad-input")
    existing = root / "existing"
    _write_files(root / "files")
    places: dict[str, Path] = {"files": root / "files", **_make_runs(existing)}
    work = root / "work"
    work.mkdir()
    before = tree_digest(existing)
    with ExitStack() as mounts:
        try:
            places["tiny"] = mounts.enter_context(tmpfs(root / "tiny", "48k"))
            places["readonly"] = mounts.enter_context(tmpfs(root / "readonly", "1m"))
            remount_read_only(places["readonly"])
        except pytest.skip.Exception:
            pass  # no mounts here: those two cases are skipped

        def arguments(case: tuple[str, list[str], str]) -> list[str] | None:
            try:
                return [arg.format(**places) for arg in case[1]]
            except KeyError:
                return None  # a place this machine could not make

        def in_a_process(
            case: tuple[str, list[str], str],
        ) -> subprocess.CompletedProcess[str] | None:
            args = arguments(case)
            return None if args is None else run_cli(args, cwd=work)

        with ThreadPoolExecutor(max_workers=2) as pool:
            spawned = [(c[0], pool.submit(in_a_process, c)) for c in CASES if c[0] in IN_A_PROCESS]
            results: dict[str, subprocess.CompletedProcess[str] | None] = {}
            for case in CASES:
                if case[0] not in IN_A_PROCESS:
                    args = arguments(case)
                    results[case[0]] = None if args is None else run_cli_in_process(args, work)
            results.update((name, future.result()) for name, future in spawned)
    return {
        "results": results,
        "before": before,
        "after": tree_digest(existing),
        "files": places["files"],
        "half_made": sorted(str(p) for p in work.glob("runs/*/*")),
    }


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_fix_it_line(
    outcomes: dict[str, object], case: tuple[str, list[str], str]
) -> None:
    result = outcomes["results"][case[0]]  # type: ignore[index]
    if result is None:
        pytest.skip("needs a tmpfs mount")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    line = lines[0]
    assert line.startswith("brickwork ") and ": error: " in line
    assert case[2] in line, line
    assert FIX_HINT.search(line.lower()), f"no fix in: {line}"


def test_bad_input_table_is_large_and_leaves_every_run_unchanged(
    outcomes: dict[str, object],
) -> None:
    assert len(CASES) >= 70
    assert outcomes["after"] == outcomes["before"]
    assert outcomes["half_made"] == []  # no mistake left a run folder behind
    files = outcomes["files"]
    assert (files / "deploy" / "config.yaml").read_text() == "my own config\n"  # type: ignore[operator]
    assert (files / "taken.csv").read_text() == "my results\n"  # type: ignore[operator]
    assert sorted(p.name for p in (files / "deploy").iterdir()) == ["config.yaml"]  # type: ignore[operator]
