"""A Hugging Face model under DDP: 2 processes give the 1-process weights.

The tiny BERT (hidden size 32, 2 layers) fine-tunes on 33 training sentences with a
global batch of 8: each epoch's last step holds one sentence, so one rank has none and
joins the all-reduce with a zero-weight pass. Each rank pads its own half-batch to its
own longest sentence (dynamic padding), and the model returns its output object, not a
tensor; masks make the padding irrelevant, so the weights agree to float rounding.
One `torchrun` launch runs both cases (full fine-tune and LoRA) in one process group.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")
pytest.importorskip("peft")

from brickwork.loop import fit
from tests.hf_models import write_topic_csv

pytestmark = pytest.mark.slow

CASES = {
    "full": [],
    "lora": ["finetune.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [query, value]}"],
}

WORKER = """
import json, sys
from pathlib import Path

import torch.distributed as dist

from brickwork.loop import fit

config, cases, root = json.loads(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3])
dist.init_process_group("gloo")
for name, overrides in cases.items():
    fit(config, overrides=overrides, run_dir=root / f"{name}-2")
dist.destroy_process_group()
"""


def hf_config(model: Path, csv_path: Path) -> dict[str, Any]:
    """No dropout anywhere: each rank would draw its own masks."""
    return {
        "name": "hf-ddp",
        "data": {
            "name": "text_csv",
            "csv": str(csv_path),
            "tokenizer": "model",
            "max_length": 48,
            "global_batch_size": 8,
            "batch_size": 8,
        },
        "model": {
            "name": f"hf/{model}",
            "pretrained": True,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        # SGD: Adam divides by the root of tiny second moments, which turns float rounding
        # in a near-zero gradient into a whole step of the learning rate either way.
        "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
        "trainer": {"max_epochs": 2, "log_every_n_steps": 2, "test_after_fit": False},
        "loggers": {"progress_bar": False, "tensorboard": {"enabled": False}},
    }


@pytest.fixture(scope="module")
def runs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf-ddp")
    config = hf_config(tiny_bert, write_topic_csv(root / "topics.csv", per_topic=13))
    for name, overrides in CASES.items():
        fit(config, overrides=overrides, run_dir=root / f"{name}-1")
    script = root / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += [str(script), json.dumps(config), json.dumps(CASES), str(root)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("case", CASES)
def test_two_processes_train_an_hf_model_to_the_one_process_weights(
    runs: Path, tiny_bert: Path, case: str
) -> None:
    one, two = runs / f"{case}-1", runs / f"{case}-2"
    assert summary(two)["world_size"] == 2 and summary(one)["world_size"] == 1
    assert summary(two)["num_steps"] == summary(one)["num_steps"] == 10  # 5 steps an epoch
    got = load_file(two / "checkpoints" / "last" / "model.safetensors")
    want = load_file(one / "checkpoints" / "last" / "model.safetensors")
    assert got.keys() == want.keys()
    if case == "lora":  # lora_B starts at zero: non-zero means the adapters trained
        assert all(want[name].abs().sum() > 0 for name in want if ".lora_B." in name)
    else:
        start = load_file(tiny_bert / "model.safetensors")[
            "bert.encoder.layer.0.output.dense.weight"
        ]
        assert not torch.equal(want["bert.encoder.layer.0.output.dense.weight"], start)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)
    assert summary(two)["final"]["val/loss"] == pytest.approx(
        summary(one)["final"]["val/loss"], rel=1e-5
    )
