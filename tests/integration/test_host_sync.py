"""A training step that does not log never makes the host wait for the device.

On a GPU the CPU must queue the next step's kernels while the current one runs; a
read of a tensor's value (`.item()`, `bool()`, `float()`) makes it wait instead. On
the CPU such reads are visible as `aten._local_scalar_dense` calls, so a dispatch
mode counts them, keeping those whose innermost Python frame is brickwork's own code
(torch's CPU optimizers read their step counters; that is not a device sync).
Under two processes the same window counts `torch.distributed` calls made from
brickwork: DDP's gradient all-reduce runs in C++ and is the only collective left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import brickwork
from brickwork.loop import fit

PACKAGE = str(Path(brickwork.__file__).parent)
WINDOW = 40  # consecutive non-logging steps, inside one epoch
# Batch 16: 79 steps per digits epoch; logging every 100 steps: none inside the window.
QUIET = [
    "data.batch_size=16",
    "trainer.log_every_n_steps=100",
    f"trainer.max_steps={WINDOW + 5}",
    "trainer.max_epochs=null",
    "trainer.test_after_fit=false",
    "model={name: mlp, hidden_sizes: [32], dropout: 0}",
    "loggers.progress_bar=false",
    "early_stopping=null",
]


# Frames of the probe itself and of torch's dispatch machinery, between a read and its caller.
PROBE_FILES = (__file__, "torch/utils/_python_dispatch.py", "torch/_ops.py", "torch/_compile.py")
PROBE_FILES += ("worker.py",)  # the two-process worker below
PROBE_FOLDERS = ("/torch/_dynamo/",)  # dispatch modes run under dynamo's `disable` wrapper


def _in_probe(filename: str) -> bool:
    return filename.endswith(PROBE_FILES) or any(f in filename for f in PROBE_FOLDERS)


def brickwork_frame(depth: int) -> str | None:
    """The innermost caller outside the probe, if it is brickwork's code (not torch's)."""
    frame = sys._getframe(depth)
    while frame is not None and _in_probe(frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or not frame.f_code.co_filename.startswith(PACKAGE):
        return None
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"


class ScalarReads(TorchDispatchMode):
    """Records where brickwork's code reads a tensor's value to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            where = brickwork_frame(1)
            if where is not None:
                self.reads.append(where)
        return func(*args, **(kwargs or {}))


class Window:
    """A callback that holds `mode` active from after step 1 to after step 1 + WINDOW."""

    def __init__(self, mode: Any) -> None:
        self.mode, self.entered = mode, False

    def on_step_end(self, state: Any, logs: dict[str, float]) -> None:
        assert not logs  # no logging step inside the window
        if state.step == 1:
            self.mode.__enter__()
            self.entered = True
        elif state.step == 1 + WINDOW and self.entered:
            self.mode.__exit__(None, None, None)
            self.entered = False


def test_forty_non_logging_steps_read_nothing_to_the_host(tmp_path: Path) -> None:
    reads = ScalarReads()
    fit(None, overrides=QUIET, run_dir=tmp_path / "run", callbacks=[Window(reads)])
    assert reads.reads == []


def test_the_count_sees_reads_in_brickwork_and_ignores_reads_in_torch() -> None:
    """The probe itself: the per-step read of `on_nonfinite: skip` counts, torch's do not."""
    from brickwork.nonfinite import NonFiniteGuard

    reads = ScalarReads()
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())  # reads its step counter on the CPU
    with reads:
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        float(torch.ones(()))  # read in this file: not brickwork's code
        NonFiniteGuard.all_finite([(torch.tensor(1.0), 1)])  # read in brickwork: counted
    assert [r.split(":")[0] for r in reads.reads] == ["nonfinite.py"]


WORKER = """
import json, os, sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, sys.argv[3])
from tests.integration.test_host_sync import QUIET, ScalarReads, Window, brickwork_frame
from brickwork.loop import fit

collectives = []
counting = [False]
for name in ("all_reduce", "all_gather", "all_gather_object", "broadcast",
             "broadcast_object_list", "barrier", "reduce", "gather_object", "monitored_barrier"):
    original = getattr(dist, name)

    def counted(*args, _original=original, _name=name, **kwargs):
        if counting[0] and brickwork_frame(2) is not None:
            collectives.append(f"{_name} from {brickwork_frame(2)}")
        return _original(*args, **kwargs)

    setattr(dist, name, counted)


class Counting(ScalarReads):
    def __enter__(self):
        counting[0] = True
        return super().__enter__()

    def __exit__(self, *args):
        counting[0] = False
        return super().__exit__(*args)


reads = Counting()
# Batch 8 per process: the same 79 steps per epoch as one process of 16.
fit(None, overrides=[*QUIET, "data.batch_size=8"], run_dir=sys.argv[1], callbacks=[Window(reads)])
if os.environ["RANK"] == "0":
    Path(sys.argv[2]).write_text(json.dumps({"reads": reads.reads, "collectives": collectives}))
"""


@pytest.mark.slow
def test_under_two_processes_a_non_logging_step_runs_no_collective_of_brickwork(
    tmp_path: Path,
) -> None:
    script, found = tmp_path / "worker.py", tmp_path / "found.json"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parents[2])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", str(script), str(tmp_path / "run"), str(found), root]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(found.read_text()) == {"reads": [], "collectives": []}
