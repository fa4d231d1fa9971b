"""`brickwork inspect` prints modules, parameter counts, frozen flags and real output shapes."""

from __future__ import annotations

import torch

from brickwork.data.text_csv import pad_collate
from brickwork.models.summary import format_summary, parameter_totals, summarize_model
from brickwork.models.text import TextRNN
from tests.conftest import run_cli_in_process


def test_inspect_shows_frozen_backbone_shapes_and_memory() -> None:
    result = run_cli_in_process(
        ["inspect", "finetune.freeze=backbone", "model.channels=[8,16]", "--depth", "1"]
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "cnn on digits: one batch of (64, 1, 8, 8)"
    features = next(line for line in lines if line.startswith("features "))
    head = next(line for line in lines if line.startswith("head "))
    assert "frozen" in features and "(64, 16)" in features
    assert "trainable" in head and "(64, 10)" in head
    assert "parameters: 1,442 total, 170 trainable, 1,272 frozen" in result.stdout
    assert "parameter memory: 0.01 MiB" in result.stdout


def test_inspect_reports_a_bad_override_in_one_line() -> None:
    result = run_cli_in_process(["inspect", "finetune.freeze=[nothing]"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "finetune.freeze: 'nothing' matches no parameter" in result.stderr


def test_summary_handles_dict_inputs_of_text_models() -> None:
    model = TextRNN(vocab_size=20, num_classes=2, embedding_dim=4, hidden_size=4)
    (inputs,) = pad_collate([(torch.tensor([3, 4, 5]),), (torch.tensor([6]),)])
    rows = summarize_model(model, inputs, depth=1)
    shapes = {row.name: row.output_shape for row in rows}
    assert shapes["embedding"] == "(2, 3, 4)" and shapes["head"] == "(2, 2)"
    assert "parameters:" in format_summary(rows, parameter_totals(model))
