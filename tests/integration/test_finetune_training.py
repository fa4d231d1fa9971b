"""Freezing and gradual unfreezing in real training runs on the digits data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from brickwork import fit
from tests.resume import StopAtStep

FINETUNE = [
    "trainer.max_epochs=3",
    "finetune.freeze=backbone",
    "finetune.unfreeze=[{at_epoch: 2, modules: ['features.4', 'features.5']},"
    " {at_epoch: 3, modules: ['features.*']}]",
    "finetune.lr_mult={backbone: 0.1}",
    "checkpoint.keep_k=5",
]


class Recorder:
    """Keeps the weights at the start and the whole state at the end of a run."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.end: dict[str, Any] = {}

    def on_fit_start(self, state: Any) -> None:
        self.start = copy.deepcopy(state.model.state_dict())

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        self.end = {
            "model": copy.deepcopy(state.model.state_dict()),
            "requires_grad": {n: p.requires_grad for n, p in state.model.named_parameters()},
            "param_groups": [
                {k: v for k, v in g.items() if k != "params"}
                | {"num_params": len(g["params"]), "ids": [id(p) for p in g["params"]]}
                for g in state.optimizer.param_groups
            ],
            "param_names": [
                [_name_of(state.model, p) for p in g["params"]]
                for g in state.optimizer.param_groups
            ],
            "optimizer_state": copy.deepcopy(state.optimizer.state_dict()["state"]),
            "step": state.step,
        }


def _name_of(model: torch.nn.Module, param: torch.Tensor) -> str:
    return next(n for n, p in model.named_parameters() if p is param)


def test_frozen_parameters_stay_bitwise_equal_while_the_head_trains(
    fast_overrides: list[str],
) -> None:
    recorder = Recorder()
    overrides = [*fast_overrides, "trainer.max_epochs=1", "finetune.freeze=backbone"]
    fit(None, overrides=overrides, run_dir=Path("run"), callbacks=[recorder])
    end = recorder.end["model"]
    for name, before in recorder.start.items():
        if name.startswith("features."):  # parameters and BatchNorm statistics alike
            assert torch.equal(before, end[name]), f"{name} changed while frozen"
    assert not torch.equal(recorder.start["head.1.weight"], end["head.1.weight"])
    flags = recorder.end["requires_grad"]
    assert not any(flag for name, flag in flags.items() if name.startswith("features."))


def test_unfreeze_adds_param_groups_with_scaled_learning_rates(
    fast_overrides: list[str],
) -> None:
    recorder = Recorder()
    overrides = [*fast_overrides, *FINETUNE, "scheduler=null"]
    fit(None, overrides=overrides, run_dir=Path("run"), callbacks=[recorder])
    groups = recorder.end["param_groups"]
    lr = 0.003  # the digits config's optimizer.lr
    assert [g["lr"] for g in groups] == pytest.approx([lr, lr * 0.1, lr * 0.1])
    assert recorder.end["param_names"][1] == [
        "features.4.weight",
        "features.5.weight",
        "features.5.bias",
    ]
    assert all(recorder.end["requires_grad"].values())


@pytest.mark.parametrize("stop_step", [10, 25, 40])  # before any unfreeze, mid epoch 1, end of 1
def test_resume_after_unfreeze_matches_uninterrupted_run(
    fast_overrides: list[str], stop_step: int
) -> None:
    overrides = [*fast_overrides, *FINETUNE]
    whole = Recorder()
    fit(None, overrides=overrides, run_dir=Path("whole"), callbacks=[whole])

    fit(None, overrides=overrides, run_dir=Path("split"), callbacks=[StopAtStep(stop_step)])
    resumed = Recorder()
    fit(None, resume=Path("split"), callbacks=[resumed])

    assert resumed.end["step"] == whole.end["step"]
    assert resumed.end["requires_grad"] == whole.end["requires_grad"]
    assert resumed.end["param_names"] == whole.end["param_names"]
    strip = [{k: v for k, v in g.items() if k != "ids"} for g in whole.end["param_groups"]]
    assert [{k: v for k, v in g.items() if k != "ids"} for g in resumed.end["param_groups"]] == (
        strip
    )
    for name, tensor in whole.end["model"].items():
        assert torch.equal(tensor, resumed.end["model"][name]), name
    for index, moments in whole.end["optimizer_state"].items():
        for key, value in moments.items():
            assert torch.equal(value, resumed.end["optimizer_state"][index][key]), (index, key)


def test_finetune_from_a_checkpoint_folder_then_predict_without_it(
    fast_overrides: list[str], tmp_path: Path
) -> None:
    import shutil

    import numpy as np
    from safetensors.torch import load_file

    from brickwork.inference import predict_run

    quick = [*fast_overrides, "trainer.max_epochs=1"]
    fit(None, overrides=quick, run_dir=Path("pre"))
    source = load_file("pre/checkpoints/best/model.safetensors")
    recorder = Recorder()
    overrides = [*quick, "model.pretrained=pre/checkpoints/best", "finetune.freeze=backbone"]
    fit(None, overrides=overrides, run_dir=Path("tuned"), callbacks=[recorder])
    assert torch.equal(recorder.start["features.0.weight"], source["features.0.weight"])
    assert torch.equal(recorder.end["model"]["features.0.weight"], source["features.0.weight"])
    shutil.rmtree("pre")  # predict must not need the pretrained weights any more
    np.save("inputs.npy", np.zeros((3, 8, 8), dtype=np.float32))
    assert predict_run(Path("tuned"), Path("inputs.npy"), Path("out.csv")) == 3
