"""TensorBoard's HParams tab: each run's hyperparameters with its best and final metrics."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from brickwork.loop import fit
from tests.conftest import FAST


def test_hparams_hold_the_runs_hyperparameters_and_its_best_and_final_metrics(
    tmp_path: Path,
) -> None:
    overrides = [*FAST[:-1], "loggers.tensorboard.graph=false", "optimizer.lr=0.005"]
    summary = fit(None, overrides=overrides, run_dir=tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    assert session.hparams["optimizer.lr"].number_value == 0.005
    assert session.hparams["model.name"].string_value == "cnn"
    assert not any(key.startswith("loggers.") for key in session.hparams)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    monitor = summary["monitor"]
    assert {f"best/{monitor}", "final/val/loss"} <= metric_tags
    best = events.Scalars(f"best/{monitor}")
    assert [e.step for e in best] == [summary["num_steps"]]
    assert abs(best[0].value - summary["best"]["value"]) < 1e-6
