"""What a person watching the terminal sees: a progress bar per epoch and a summary table.

On a terminal, a rich progress bar shows loss and throughput. When stdout is not a
terminal (CI logs, `nohup`, a pipe) each epoch prints one plain line instead, so
logs stay readable. Every epoch line also goes to `train.log`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from brickwork.state import TrainState

log = logging.getLogger("brickwork")


class ConsoleProgress:
    """Progress bar (or plain lines) during training, a summary table at the end."""

    def __init__(
        self,
        steps_per_epoch: int,
        batch_size: int,
        max_epochs: int | None,
        progress_bar: bool = True,
        console: Console | None = None,
    ) -> None:
        self.console = console or Console()
        self.steps_per_epoch, self.batch_size, self.max_epochs = (
            steps_per_epoch,
            batch_size,
            max_epochs,
        )
        self.use_bar = progress_bar and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._epoch_started = 0.0
        self._epoch_first_step = 0

    def on_fit_start(self, state: TrainState) -> None:
        if self.use_bar:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} samples/s"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()

    def on_epoch_start(self, state: TrainState) -> None:
        self._epoch_started = time.perf_counter()
        self._epoch_first_step = state.step
        if self._progress is not None:
            done = state.batch_in_epoch and state.step % self.steps_per_epoch
            self._task = self._progress.add_task(
                "train",
                total=self.steps_per_epoch,
                completed=done or 0,
                epoch=self._epoch_label(state.epoch),
                loss="-",
                rate="-",
            )

    def on_step_end(self, state: TrainState, logs: dict[str, float]) -> None:
        if self._progress is None:
            return
        if logs:
            self._progress.update(
                self._task,
                advance=1,
                loss=f"{logs.get('train/loss', float('nan')):.4f}",
                rate=f"{self._rate(state):.0f}",
            )
        else:
            self._progress.advance(self._task)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        line = format_epoch_line(state, metrics, self.max_epochs, self._rate(state))
        log.info(line)
        if self._progress is not None:
            self._progress.update(self._task, rate=f"{self._rate(state):.0f}")
            self._progress.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, state: TrainState, summary: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
        self.console.print(summary_table(summary))

    def _rate(self, state: TrainState) -> float:
        elapsed = time.perf_counter() - self._epoch_started
        steps = state.step - self._epoch_first_step
        return steps * self.batch_size / elapsed if elapsed > 0 else 0.0

    def _epoch_label(self, epoch: int) -> str:
        return f"{epoch + 1}/{self.max_epochs}" if self.max_epochs else str(epoch + 1)


def format_epoch_line(
    state: TrainState, metrics: dict[str, float], max_epochs: int | None, rate: float
) -> str:
    """One line per epoch: `epoch 3/20 step 120 train/loss 0.1234 val/acc 0.9800 ...`."""
    epoch = state.epoch_of_step + 1
    head = f"epoch {epoch}/{max_epochs}" if max_epochs else f"epoch {epoch}"
    values = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    return f"{head} step {state.step} {values} ({rate:.0f} samples/s)"


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: status, best monitored value, final metrics, time."""
    table = Table(title=f"brickwork run: {summary.get('run_dir', '')}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("status", str(summary.get("status")))
    best = summary.get("best")
    if best:
        table.add_row(
            f"best {summary.get('monitor')}",
            f"{best['value']:.4f} (step {best['step']}, epoch {best['epoch']})",
        )
    for key, value in summary.get("final", {}).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("steps", str(summary.get("num_steps")))
    table.add_row("wall time", f"{summary.get('wall_s', 0):.1f} s")
    return table
