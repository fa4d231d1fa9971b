"""The loop's behaviour a user relies on: hook order, accumulation, clipping, precision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from brickwork import DataBundle, register
from brickwork.checkpoint import load_checkpoint
from brickwork.data.digits import build_digits
from brickwork.loop import fit
from tests.conftest import FAST, FAST_MLP


class Recorder:
    """Records every hook call, as Lightning's hook-order test does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_fit_start(self, state: Any) -> None:
        self.calls.append("fit_start")

    def on_epoch_start(self, state: Any) -> None:
        self.calls.append(f"epoch_start:{state.epoch}")

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        if not torch.is_grad_enabled():
            raise AssertionError("training steps must build graphs")
        self.calls.append("step")

    def on_validation_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.calls.append(f"validation_end:{sorted(metrics)}")

    def on_epoch_end(self, state: Any, metrics: dict[str, float]) -> None:
        self.calls.append(f"epoch_end:{state.epoch}")

    def on_exception(self, state: Any, error: BaseException) -> None:
        self.calls.append(f"exception:{type(error).__name__}")

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        self.calls.append(f"fit_end:{summary['status']}")


def test_hooks_fire_in_documented_order(tmp_path: Path) -> None:
    recorder = Recorder()
    fit(
        None, overrides=[*FAST, "trainer.max_steps=3"], run_dir=tmp_path / "r", callbacks=[recorder]
    )
    assert recorder.calls == [
        "fit_start",
        "epoch_start:0",
        "step",
        "step",
        "step",
        "validation_end:['val/acc', 'val/f1', 'val/loss']",
        "epoch_end:0",
        "fit_end:completed",
    ]


def test_an_error_in_user_code_reaches_on_exception_and_is_not_hidden(tmp_path: Path) -> None:
    recorder = Recorder()

    def broken_loss(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        raise RuntimeError("bug in my loss")

    with pytest.raises(RuntimeError, match="bug in my loss"):
        fit(
            None,
            overrides=FAST,
            run_dir=tmp_path / "r",
            callbacks=[recorder],
            compute_loss=broken_loss,
        )
    assert recorder.calls[-2:] == ["exception:RuntimeError", "fit_end:failed"]
    assert '"status": "failed"' in (tmp_path / "r" / "summary.json").read_text()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last")["model"]


def test_accumulating_two_batches_of_16_equals_one_batch_of_32(tmp_path: Path) -> None:
    common = [
        *FAST_MLP,
        "model.dropout=0",
        "trainer.max_steps=12",
        "optimizer.name=sgd",
        "optimizer.lr=0.1",
        "data.shuffle=false",
    ]
    fit(None, overrides=[*common, "data.batch_size=32"], run_dir=tmp_path / "big")
    fit(
        None,
        overrides=[*common, "data.batch_size=16", "trainer.accumulate_grad_batches=2"],
        run_dir=tmp_path / "accumulated",
    )
    big, accumulated = _weights(tmp_path / "big"), _weights(tmp_path / "accumulated")
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-6)


class GradientProbe:
    """Reads the gradients the optimizer just used (they live until the next step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.max_abs: list[float] = []

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        grads = [p.grad for p in state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.stack([g.norm() for g in grads]).norm()))
        self.max_abs.append(max(float(g.abs().max()) for g in grads))


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_the_loop_clips_gradients_by_the_chosen_algorithm(tmp_path: Path, clip: str) -> None:
    probe = GradientProbe()
    overrides = [
        *FAST_MLP,
        "trainer.max_steps=4",
        "trainer.gradient_clip_val=0.01",
        f"trainer.gradient_clip_algorithm={clip}",
    ]
    fit(None, overrides=overrides, run_dir=tmp_path / "r", callbacks=[probe])
    if clip == "norm":
        assert probe.norms == pytest.approx([0.01] * 4, rel=1e-4)  # exactly at the limit
    else:
        assert max(probe.max_abs) == pytest.approx(0.01)  # elements capped ...
        assert min(probe.norms) > 0.05  # ... while the total norm stays far above the limit


def test_bf16_autocast_trains_on_cpu(tmp_path: Path) -> None:
    summary = fit(None, overrides=[*FAST, "trainer.precision=bf16"], run_dir=tmp_path / "r")
    assert summary["status"] == "completed"
    assert summary["final"]["val/acc"] > 0.5  # two epochs of a tiny CNN in bf16 still learn


def test_early_stopping_ends_the_run_and_says_why(tmp_path: Path) -> None:
    overrides = [
        *FAST,
        "trainer.max_epochs=30",
        "early_stopping.patience=1",
        "early_stopping.min_delta=10",
        "checkpoint.monitor=val/loss",
        "checkpoint.mode=min",
    ]
    summary = fit(None, overrides=overrides, run_dir=tmp_path / "r")
    assert summary["status"] == "early_stopped"
    assert summary["num_epochs"] == 2  # first validation sets the best, the second fails to beat it
    assert "val/loss did not improve" in summary["stop_reason"]


def test_a_misspelled_monitor_names_the_metrics_that_exist(tmp_path: Path) -> None:
    from brickwork.errors import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoint.monitor = 'val/accuracy'.*val/acc"):
        fit(None, overrides=[*FAST, "checkpoint.monitor=val/accuracy"], run_dir=tmp_path / "r")


def test_the_loop_steps_a_per_step_schedule_every_step_and_logs_its_lr(tmp_path: Path) -> None:
    """The schedules' shapes are unit tests (test_optim.py); this checks the loop's side."""
    import json

    overrides = [*FAST, "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]
    overrides += ["scheduler.name=cosine", "scheduler.warmup_steps=5"]
    fit(None, overrides=overrides, run_dir=tmp_path / "r")
    rows = [
        json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    lrs = [row["lr"] for row in rows if "train/loss" in row]
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4] == pytest.approx(0.003)  # warmup to the lr
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] < 0.001  # cosine down


class _UnreadableSplit(torch.utils.data.Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        raise OSError("test split unreadable")


@register("dataset", "digits_unreadable_test")
def _digits_with_an_unreadable_test_split(seed: int = 42) -> DataBundle:
    bundle = build_digits(seed=seed)
    bundle.test = _UnreadableSplit(len(bundle.test))
    return bundle


class RaiseIn:
    """Raises in one hook (or none); records the status `on_fit_end` saw, if it ran."""

    def __init__(self, hook: str | None = None) -> None:
        self.hook, self.fit_end_status = hook, None
        if hook is not None:
            setattr(self, hook, self._raise)

    def _raise(self, *args: Any) -> None:
        raise RuntimeError(f"boom in {self.hook}")

    def on_fit_end(self, state: Any, summary: dict[str, Any]) -> None:
        self.fit_end_status = summary["status"]


def _sigint_handler_is_python_default() -> bool:
    import signal

    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_fit_end_runs_and_signal_handlers_return_whatever_raises(tmp_path: Path) -> None:
    import os
    import signal

    from brickwork.stop import StopKind

    assert _sigint_handler_is_python_default()
    failing = RaiseIn("on_fit_start")
    with pytest.raises(RuntimeError, match="boom in on_fit_start"):
        fit(
            None,
            overrides=[*FAST, "trainer.max_steps=2"],
            run_dir=tmp_path / "a",
            callbacks=[failing],
        )
    assert failing.fit_end_status == "failed"
    assert _sigint_handler_is_python_default()

    # A failing test pass (after training): still on_fit_end, handlers back, status failed.
    recorder = RaiseIn()
    overrides = [*FAST, "trainer.max_steps=2", "trainer.test_after_fit=true"]
    with pytest.raises(OSError, match="test split unreadable"):
        fit(
            None,
            overrides=[*overrides, "data.name=digits_unreadable_test"],
            run_dir=tmp_path / "b",
            callbacks=[recorder],
        )
    assert recorder.fit_end_status == "failed" and _sigint_handler_is_python_default()
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "failed"

    # A second fit in the same process is stopped cleanly by SIGINT: the handler is ours again.
    class SendSigint:
        def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
            if state.step == 3:
                os.kill(os.getpid(), signal.SIGINT)

    summary = fit(None, overrides=FAST, run_dir=tmp_path / "c", callbacks=[SendSigint()])
    assert summary["stop"] == {"kind": StopKind.PREEMPTED.value, "detail": "signal SIGINT"}
    assert summary["num_steps"] == 3 and summary["status"] == "preempted"
    assert _sigint_handler_is_python_default()


def test_a_callback_named_in_the_config_is_built_with_its_arguments(tmp_path: Path) -> None:
    (tmp_path / "my_callbacks.py").write_text(
        "from brickwork import register\n"
        "from brickwork.stop import StopKind\n\n"
        "@register('callback', 'stop_after')\n"
        "class StopAfter:\n"
        "    def __init__(self, steps: int) -> None:\n"
        "        self.steps = steps\n\n"
        "    def on_step_end(self, state, logs):\n"
        "        if state.step >= self.steps:\n"
        "            state.request_stop(StopKind.USER, f'stop_after {self.steps}')\n"
    )
    overrides = [
        *FAST,
        f"imports=[{tmp_path / 'my_callbacks.py'}]",
        "callbacks=[{name: stop_after, steps: 7}]",
    ]
    summary = fit(None, overrides=overrides, run_dir=tmp_path / "r")
    assert (summary["num_steps"], summary["status"]) == (7, "stopped")
    assert summary["stop"] == {"kind": "user", "detail": "stop_after 7"}
    assert (tmp_path / "r" / "checkpoints" / "last").resolve().name == "step-00000007"


def test_a_user_stop_is_not_reported_as_early_stopping(tmp_path: Path) -> None:
    from brickwork.stop import StopKind
    from tests.resume import StopAtStep

    summary = fit(
        None, overrides=FAST, run_dir=tmp_path / "r", callbacks=[StopAtStep(5, kind=StopKind.USER)]
    )
    assert summary["status"] == "stopped" and summary["stop"]["kind"] == "user"


class _StopAtEpochStart:
    """Asks for a PREEMPTED stop when epoch `epoch` is about to begin (a search pausing a trial)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, state: Any) -> None:
        if state.epoch == self.epoch:
            from brickwork.stop import StopKind

            state.request_stop(StopKind.PREEMPTED, "paused before the epoch")


def test_a_stop_asked_at_an_epochs_start_takes_no_step_of_that_epoch(tmp_path: Path) -> None:
    run = tmp_path / "r"
    summary = fit(None, overrides=FAST_MLP, run_dir=run, callbacks=[_StopAtEpochStart(1)])
    steps_per_epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert (summary["num_epochs"], summary["num_steps"]) == (1, steps_per_epoch)
    assert summary["status"] == "preempted"
    # The epoch-end checkpoint is the last one: nothing was trained after it.
    assert (run / "checkpoints" / "last").resolve().name == f"step-{steps_per_epoch:08d}"
