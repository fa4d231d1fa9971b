"""Every registered dataset, loss, optimizer, schedule, metric and callback obeys one contract:
it builds from a config and takes part in a real training step.

The cases are keyed by registry name, so registering a new built-in without a case here
fails `test_every_registered_component_has_a_case` rather than going untested.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from brickwork import fit, registry
from brickwork.batch import move_to_device
from brickwork.components import build_callbacks, build_components, build_optimization
from brickwork.config import load_config
from tests.conftest import FAST
from tests.unit.test_data_files import write_images

ONE_STEP = [
    *(o for o in FAST if not o.startswith("model.")),
    "trainer.max_steps=1",
    "trainer.max_epochs=null",
]


def _data(**items: object) -> str:
    return "data={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in items.items()) + "}"


def _image_folder(tmp: Path) -> list[str]:
    write_images(tmp / "images", {"a": 6, "b": 6})
    return [_data(name="image_folder", root=str(tmp / "images"), image_size=8, batch_size=4)]


def _image_csv(tmp: Path) -> list[str]:
    files = write_images(tmp / "images", {"a": 6, "b": 6})
    rows = [f"{p.relative_to(tmp / 'images')},{p.parent.name}" for p in files]
    (tmp / "train.csv").write_text("\n".join(["image,label", *rows]) + "\n")
    csv, root = str(tmp / "train.csv"), str(tmp / "images")
    return [_data(name="image_csv", csv=csv, root=root, image_size=8, batch_size=4)]


def _tabular_csv(tmp: Path) -> list[str]:
    rows = [f"{i},{'red' if i % 3 else 'blue'},{'big' if i > 14 else 'small'}" for i in range(30)]
    (tmp / "t.csv").write_text("\n".join(["size,colour,label", *rows]) + "\n")
    csv = str(tmp / "t.csv")
    return [_data(name="tabular_csv", csv=csv, target="label", batch_size=4), "model.name=mlp"]


def _text_csv(tmp: Path) -> list[str]:
    rows = [f"good movie {i},pos" for i in range(10)] + [f"bad film {i},neg" for i in range(10)]
    (tmp / "x.csv").write_text("\n".join(["text,label", *rows]) + "\n")
    return [_data(name="text_csv", csv=str(tmp / "x.csv"), batch_size=4), "model.name=text_rnn"]


DATASETS: dict[str, Callable[[Path], list[str]]] = {
    "digits": lambda tmp: ["model.channels=[4,8]"],
    "image_folder": _image_folder,
    "image_csv": _image_csv,
    "tabular_csv": _tabular_csv,
    "text_csv": _text_csv,
}
# Each component as a config override; the rest of the config is the fast digits run.
OVERRIDES: dict[str, dict[str, list[str]]] = {
    "optimizer": {name: [f"optimizer.name={name}"] for name in ("sgd", "adam", "adamw")},
    "scheduler": {
        "cosine": ["scheduler.name=cosine", "scheduler.warmup_steps=1"],
        "step": ["scheduler.name=step"],
        "onecycle": ["scheduler.name=onecycle"],
        "reduce_on_plateau": ["scheduler.name=reduce_on_plateau"],
    },
    "metric": {
        "accuracy": ["metrics=[accuracy]"],
        "f1_macro": ["metrics=[f1_macro]"],
        "top_k_accuracy": ["metrics=[{name: top_k_accuracy, top_k: 3}]"],
    },
    "callback": {"early_stopping": ["callbacks=[{name: early_stopping, patience: 2}]"]},
}
# Losses see the targets of their task: class indices, or regression values.
LOSSES: dict[str, tuple[list[str], torch.Tensor]] = {
    "cross_entropy": (["loss.label_smoothing=0.1"], torch.tensor([0, 2, 1, 2])),
    "mse": (["loss.name=mse"], torch.randn(4, 3)),
}
KINDS = {"dataset": DATASETS, "loss": LOSSES, **OVERRIDES}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registered_component_has_a_case(kind: str) -> None:
    assert set(registry.built_in(kind)) == set(KINDS[kind])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_builds_from_its_config_and_gives_a_finite_gradient(name: str) -> None:
    from brickwork.losses import build_loss

    overrides, targets = LOSSES[name]
    config = load_config(None, overrides)
    loss_fn = build_loss(config.loss.name, config.loss.kwargs, {"num_classes": 3})
    outputs = torch.randn(4, 3, requires_grad=True)
    loss = loss_fn(outputs, targets)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_builds_from_its_config_and_trains_a_step(name: str, tmp_path: Path) -> None:
    summary = fit(None, overrides=[*ONE_STEP, *DATASETS[name](tmp_path)], run_dir=tmp_path / "r")
    assert summary["status"] == "completed" and summary["num_steps"] == 1
    assert math.isfinite(summary["final"]["val/loss"])


CASES = [(kind, name) for kind, names in OVERRIDES.items() for name in sorted(names)]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_each_component_builds_and_takes_part_in_a_step(kind: str, name: str) -> None:
    config = load_config(None, [*FAST, *OVERRIDES[kind][name]])
    parts = build_components(config, torch.device("cpu"))
    optimizer, schedule = build_optimization(config, parts.model, steps_per_epoch=4)
    callbacks = build_callbacks(config)
    before = [p.detach().clone() for p in parts.model.parameters()]

    output = parts.compute_loss(parts.model, move_to_device(next(iter(parts.train_loader)), "cpu"))
    output["loss"].backward()
    optimizer.step()
    if schedule is not None and schedule.interval != "plateau":
        schedule.scheduler.step()  # type: ignore[call-arg]
    parts.metrics.update(output["preds"].detach(), output["target"])

    assert torch.isfinite(output["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, parts.model.parameters(), strict=True))
    assert all(math.isfinite(float(v)) for v in parts.metrics.compute().values())
    assert (kind != "callback") or len(callbacks) == 1
