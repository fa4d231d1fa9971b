"""Hugging Face text models: fine-tune from a local folder, freeze, LoRA, resume, export, predict.

Everything runs offline on a tiny BERT (hidden size 32, 2 layers) and a WordPiece
tokenizer trained on docstrings of the standard library (tests/hf_models.py), saved
with `save_pretrained` into a temporary folder once per session.
"""

from __future__ import annotations

import copy
import csv
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from brickwork import fit
from tests.hf_models import save_tiny_vit, write_topic_csv
from tests.resume import StopAtStep, assert_same_state, final_state

LORA = "finetune.lora={r: 4, alpha: 8, dropout: 0.1, target_modules: [query, value]}"


def hf_config(model: Path, csv_path: Path, **trainer: Any) -> dict[str, Any]:
    """A short fine-tuning run of `model` on the topic CSV."""
    return {
        "name": "hf-text",
        "data": {
            "name": "text_csv",
            "csv": str(csv_path),
            "tokenizer": "model",
            "max_length": 48,
            "batch_size": 8,
        },
        "model": {"name": f"hf/{model}", "pretrained": True},
        "optimizer": {"name": "adamw", "lr": 0.003},
        "trainer": {
            "max_epochs": 2,
            "log_every_n_steps": 2,
            "test_after_fit": False,
            **trainer,
        },
        "loggers": {"progress_bar": False, "tensorboard": {"enabled": False}},
    }


class Weights:
    """Keeps the model's weights and trainable flags at the start and the end of a run."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.end: dict[str, torch.Tensor] = {}
        self.trainable: dict[str, bool] = {}

    def on_fit_start(self, state: Any) -> None:
        self.start = copy.deepcopy(state.model.state_dict())
        self.trainable = {n: p.requires_grad for n, p in state.model.named_parameters()}

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        self.end = copy.deepcopy(state.model.state_dict())

    def changed(self, name: str) -> bool:
        return not torch.equal(self.start[name], self.end[name])


@pytest.fixture
def topics() -> Path:
    return write_topic_csv(Path("topics.csv"))


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> None:
    """`brickwork.cli.main` in-process attaches its console handler to this test's stderr."""
    monkeypatch.setattr(logging.getLogger("brickwork"), "handlers", [])


def _load(config: dict[str, Any], overrides: list[str]) -> Any:
    from brickwork.config import load_config

    return load_config(config, overrides)


def test_finetune_from_a_local_folder_reports_the_new_head_and_keeps_its_files(
    tiny_bert: Path, topics: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="brickwork"):
        summary = fit(hf_config(tiny_bert, topics), run_dir="run")
    assert summary["status"] == "completed" and summary["num_steps"] > 0
    assert "new classifier head, freshly initialised (classifier.bias, classifier.weight)" in (
        caplog.text
    )
    saved = Path("run/hf_model")
    assert (saved / "config.json").is_file() and (saved / "tokenizer.json").is_file()
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(saved).id2label == {0: "json", 1: "pathlib", 2: "re"}


def test_frozen_backbone_stays_bitwise_equal_while_the_head_trains(
    tiny_bert: Path, topics: Path
) -> None:
    weights = Weights()
    config = _load(hf_config(tiny_bert, topics, max_epochs=1), ["finetune.freeze=backbone"])
    fit(config, run_dir="run", callbacks=[weights])
    backbone = [name for name in weights.start if name.startswith("bert.")]
    assert backbone and not any(weights.changed(name) for name in backbone)
    assert weights.changed("classifier.weight") and weights.changed("classifier.bias")
    assert {n for n, flag in weights.trainable.items() if flag} == {
        "classifier.weight",
        "classifier.bias",
    }


def test_lora_trains_only_adapters_and_head(tiny_bert: Path, topics: Path) -> None:
    weights = Weights()
    config = _load(hf_config(tiny_bert, topics, max_epochs=1), [LORA])
    fit(config, run_dir="run", callbacks=[weights])
    trainable = {n for n, flag in weights.trainable.items() if flag}
    assert trainable and all(
        ".lora_" in n or ".classifier.modules_to_save." in n for n in trainable
    )
    assert any("query.lora_A" in n for n in trainable)
    assert any("value.lora_B" in n for n in trainable)
    frozen = [n for n in weights.start if n not in trainable]
    assert not any(weights.changed(n) for n in frozen), "a frozen base weight changed"
    assert all(weights.changed(n) for n in trainable if "lora_B" in n or "modules_to_save" in n)
    # The trainable fraction: rank-4 adapters on query and value, plus the 3-class head.
    counts = {n: t.numel() for n, t in weights.start.items() if "original_module" not in n}
    fraction = sum(counts[n] for n in trainable) / sum(counts.values())
    assert 0.005 < fraction < 0.05, fraction


@pytest.mark.parametrize("stop_step", [3, 4])  # mid epoch 1, and at its end (4 steps an epoch)
def test_lora_resume_after_a_stop_matches_the_uninterrupted_run(
    tiny_bert: Path, topics: Path, stop_step: int
) -> None:
    config = _load(hf_config(tiny_bert, topics), [LORA])
    fit(config, run_dir="whole")
    fit(config, run_dir="split", callbacks=[StopAtStep(stop_step)])
    summary = fit(None, resume="split")
    assert summary["status"] == "completed"
    whole, resumed = final_state(Path("whole")), final_state(Path("split"))
    assert any(".lora_A." in key for key in whole["model"])
    assert_same_state(whole, resumed)


_KILLED_RUN = """
import json, os, signal, sys
import brickwork

class KillAtStep:
    def on_step_end(self, state, logs):
        if state.step == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no final save

brickwork.fit(json.loads(sys.argv[1]), run_dir="split", callbacks=[KillAtStep()])
"""


def test_lora_resume_after_a_kill_matches_the_uninterrupted_run(
    tiny_bert: Path, topics: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    config = _load(hf_config(tiny_bert, topics), [LORA, "checkpoint.every_n_steps=2"])
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, json.dumps(config.to_dict())],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert killed.returncode == -9, killed.stderr
    assert json.loads(Path("split/summary.json").read_text())["status"] == "running"
    fit(None, resume="split")
    fit(config, run_dir="whole")
    assert_same_state(final_state(Path("whole")), final_state(Path("split")))


def test_example_config_is_valid() -> None:
    from brickwork.config import load_config

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "hf_text" / "finetune.yaml")
    assert config.data.kwargs["tokenizer"] == "model" and config.model.name == "hf/pretrained"


def test_hf_export_loads_in_plain_transformers_with_the_checkpoints_logits(
    tiny_bert: Path, topics: Path, console: None
) -> None:
    from brickwork.cli import main

    fit(_load(hf_config(tiny_bert, topics, max_epochs=1), [LORA]), run_dir="run")
    assert main(["export", "run", "--format", "hf", "--output", "exported"]) == 0  # in-process
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from brickwork.batch import ModelKwargs, call_model, logits_of
    from brickwork.inference import load_trained

    model = AutoModelForSequenceClassification.from_pretrained("exported").eval()
    tokenizer = AutoTokenizer.from_pretrained("exported")
    assert not any("lora" in name for name in model.state_dict()), "LoRA was not merged"
    assert model.config.id2label[1] == "pathlib"
    texts = ["Decode a JSON document.", "Compile a regular expression pattern into an object."]
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    parts, _ = load_trained(Path("run"))
    with torch.no_grad():
        plain = model(**inputs).logits
        trained = logits_of(call_model(parts.model, ModelKwargs(inputs)))
    assert torch.allclose(plain, trained, atol=1e-5)
    from brickwork.errors import ConfigError
    from brickwork.export import export_run

    with pytest.raises(ConfigError, match="was not written by brickwork export"):
        export_run(Path("run"), "hf", Path("topics.csv"))
    assert export_run(Path("run"), "hf", Path("exported"))["max_abs_diff"] < 1e-5  # replaces


def test_predict_on_new_text_needs_no_model_folder(tiny_bert: Path, topics: Path) -> None:
    shutil.copytree(tiny_bert, "model")
    fit(hf_config(Path("model"), topics, max_epochs=1), run_dir="run")
    shutil.rmtree("model")  # the run folder holds the config, tokenizer and weights
    with open("new.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], ["Parse a URL into parts."], ["이 라이브러리는"]])
    from brickwork.inference import predict_run

    assert predict_run(Path("run"), Path("new.csv"), Path("out.csv")) == 2
    with open("out.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {row["label"] for row in rows} <= {"json", "pathlib", "re"}


def test_inspect_shows_the_transformer_layers_and_lora_adapters(
    tiny_bert: Path, topics: Path
) -> None:
    from brickwork import inspect_model

    shown = str(inspect_model(_load(hf_config(tiny_bert, topics), [LORA.replace("r: 4", "r: 2")])))
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}
    # module, type, params, trainable, frozen, status: a layer's 8,544 weights stay frozen,
    # its adapters (query and value: 2 x (2 x 32 + 32 x 2)) train.
    assert rows["bert.encoder.layer.1"][1:7] == [
        "BertLayer",
        "8,800",
        "256",
        "8,544",
        "partly",
        "frozen",
    ]
    assert rows["bert.encoder.layer.1"][7] == "(8,"  # output shape (8, T, 32)
    head = rows["classifier"]  # the trained copy (3 x 32 + 3) beside the frozen original
    assert head[1:5] == ["ModulesToSaveWrapper", "198", "99", "99"]
    assert "LoRA adapters: r=2, alpha=8 on query, value in 4 layers, 512 parameters" in shown


def test_inspect_command_shows_each_frozen_transformer_layer_and_the_trainable_head(
    tiny_bert: Path, topics: Path, console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from brickwork.cli import main

    data = [
        "data.name=text_csv",
        "data.csv=topics.csv",
        "data.tokenizer=model",
        "data.max_length=48",
    ]
    freeze = ["finetune.freeze=backbone", "--depth", "1"]
    assert main(["inspect", f"model.name=hf/{tiny_bert}", *data, *freeze]) == 0
    shown = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.strip()}
    for layer in ("bert.encoder.layer.0", "bert.encoder.layer.1"):  # listed at any depth
        assert rows[layer][1:6] == ["BertLayer", "8,544", "0", "8,544", "frozen"]
    assert rows["classifier"][1:6] == ["Linear", "99", "99", "0", "trainable"]
    assert "parameters: 39,619 total, 99 trainable, 39,520 frozen" in shown


def test_a_hub_id_offline_fails_in_one_line_that_says_how_to_use_a_folder(
    topics: Path,
) -> None:
    from brickwork.errors import ConfigError
    from brickwork.models.huggingface import build_hf_model

    config = hf_config(Path("no-such-org/tiny-model"), topics)
    with pytest.raises(ConfigError) as raised:  # the tokenizer is the first thing it needs
        fit(config, run_dir="run")
    with pytest.raises(ConfigError) as raised_model:  # and the model, with another tokenizer
        build_hf_model("no-such-org/tiny-model", num_classes=2, pretrained=True)
    for error in (raised.value, raised_model.value):
        line = str(error)
        assert "\n" not in line and "no-such-org/tiny-model" in line
        assert "save_pretrained('models/tiny-model')" in line
        assert "set model.name: hf/models/tiny-model" in line


UNCACHED = {  # model.name: hf/bert-base-uncased with data that need each path first
    "tokenizer": ["data.tokenizer=model", "data.csv=topics.csv", "data.name=text_csv"],
    "text model": ["data.tokenizer=whitespace", "data.csv=topics.csv", "data.name=text_csv"],
    "image model": [],  # the digits images
}


@pytest.mark.parametrize("case", UNCACHED)
def test_an_uncached_hub_id_offline_fails_in_one_line_and_leaves_no_run_folder(
    topics: Path, case: str, console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from brickwork.cli import main

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # and HF_HOME is an empty scratch cache
    overrides = ["model.name=hf/bert-base-uncased", "model.pretrained=true", *UNCACHED[case]]
    assert main(["train", *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith("brickwork train: error: ") and "'bert-base-uncased'" in error
    auto = "AutoModelForImageClassification" if case == "image model" else "AutoTokenizer"
    assert auto in error and "save_pretrained('models/bert-base-uncased')" in error
    assert error.endswith("set model.name: hf/models/bert-base-uncased")
    assert not any(Path("runs").rglob("*")), "a half-made run folder was left"


def test_missing_unexpected_and_new_head_keys_are_shown_on_the_console(
    tmp_path: Path, topics: Path, console: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A masked-LM folder: no pooler (missing), an MLM head (unexpected), no classifier."""
    from brickwork.cli import main
    from tests.hf_models import build_tiny_bert

    folder = build_tiny_bert(tmp_path / "tiny-mlm", masked_lm=True)
    data = [
        "data.name=text_csv",
        "data.csv=topics.csv",
        "data.tokenizer=model",
        "data.max_length=48",
    ]
    quiet = ["loggers.progress_bar=false", "loggers.tensorboard.enabled=false"]
    run = ["trainer.max_steps=1", "trainer.test_after_fit=false", "--run-dir", "run"]
    assert (
        main(["train", f"model.name=hf/{folder}", "model.pretrained=true", *data, *quiet, *run])
        == 0
    )
    lines = capsys.readouterr().err.splitlines()
    shown = [line for line in lines if line.startswith("brickwork: ") and "pretrained:" in line]
    assert shown[0] == f"brickwork: pretrained: loaded 37 tensors from {folder}"
    assert shown[1] == (
        "brickwork: pretrained: new classifier head, freshly initialised "
        "(classifier.bias, classifier.weight)"
    )
    assert shown[2].startswith("brickwork: WARNING: pretrained: 2 tensors outside the head")
    assert shown[2].endswith(
        "initialised freshly: bert.pooler.dense.bias, bert.pooler.dense.weight"
    )
    assert shown[3].startswith(f"brickwork: pretrained: 5 tensors in {folder} are not used")
    assert "cls.predictions.bias" in shown[3] and len(shown) == 4


def test_accumulation_and_dynamic_padding_match_one_large_batch(
    tiny_bert: Path, topics: Path
) -> None:
    """Two micro-batches of 4 (each padded to its own longest) equal one batch of 8."""
    no_dropout = ["model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0"]
    runs = {}
    for name, batching in {
        "one": ["data.batch_size=8"],
        "accumulated": ["data.batch_size=4", "trainer.accumulate_grad_batches=2"],
    }.items():
        weights = Weights()
        config = _load(hf_config(tiny_bert, topics, max_epochs=1), [*no_dropout, *batching])
        fit(config, run_dir=name, callbacks=[weights])
        runs[name] = weights.end
    assert runs["one"].keys() == runs["accumulated"].keys()
    for key, tensor in runs["one"].items():
        assert torch.allclose(tensor, runs["accumulated"][key], atol=1e-5), key


def test_bf16_autocast_trains_on_the_output_object(tiny_bert: Path, topics: Path) -> None:
    config = _load(hf_config(tiny_bert, topics, max_epochs=1), ["trainer.precision=bf16"])
    summary = fit(config, run_dir="run")
    assert summary["status"] == "completed"
    assert torch.isfinite(torch.tensor(summary["final"]["val/loss"]))


def test_an_hf_image_model_trains_on_image_data(tmp_path: Path) -> None:
    """`hf/` with image data builds AutoModelForImageClassification (a tiny ViT on digits)."""
    folder = save_tiny_vit(tmp_path / "tiny-vit", num_channels=1)
    weights = Weights()
    overrides = [
        "trainer.max_steps=3",
        "trainer.test_after_fit=false",
        "loggers.progress_bar=false",
        "loggers.tensorboard.enabled=false",
        f"model.name=hf/{folder}",
        "model.pretrained=true",
        "finetune.freeze=backbone",
    ]
    summary = fit(None, overrides=overrides, run_dir="run", callbacks=[weights])
    assert summary["status"] == "completed"
    assert {n for n, flag in weights.trainable.items() if flag} == {
        "classifier.weight",
        "classifier.bias",
    }
    assert weights.end["classifier.weight"].shape == (10, 16)
    assert weights.changed("classifier.weight")
    assert not weights.changed("vit.embeddings.patch_embeddings.projection.weight")
