"""`trainer.compile`: a compiled run trains, resumes exactly, keeps clean keys and exports.

The resume test trains with the real default backend, inductor, through this machine's
C++ compiler: the suite's one real compile (about 20 s). Its three runs share one
inductor cache folder, so the first compiles the graphs and the other two load them;
`data.drop_last` keeps one batch shape, so nothing recompiles. The failure test goes
through inductor with a compiler that does not exist, which fails at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brickwork.export import export_run
from brickwork.loop import fit
from tests.conftest import FAST_MLP, run_cli
from tests.resume import StopAtStep, assert_same_state, final_state

pytestmark = pytest.mark.slow

INDUCTOR = [
    *FAST_MLP,
    "model.hidden_sizes=[32]",
    "model.dropout=0",
    "data.drop_last=true",
    "trainer.compile=true",  # inductor, the default backend
]


def test_an_inductor_compiled_run_resumes_exactly_with_clean_keys_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    counters.clear()
    straight = fit(None, overrides=INDUCTOR, run_dir=tmp_path / "straight")
    assert straight["status"] == "completed"
    # Inductor built the graphs, forward and backward (a silent fall-back to eager builds none).
    assert counters["inductor"]["fxgraph_cache_miss"] >= 2, dict(counters["inductor"])
    fit(None, overrides=INDUCTOR, run_dir=tmp_path / "resumed", callbacks=[StopAtStep(7)])
    fit(None, overrides=INDUCTOR, resume=tmp_path / "resumed")
    expected, actual = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert_same_state(expected, actual)
    assert not [key for key in expected["model"] if "_orig_mod" in key or "module." in key]
    exported = export_run(tmp_path / "straight", "torchscript")
    assert Path(exported["path"]).is_file() and exported["max_abs_diff"] < 1e-5


def test_a_compile_failure_is_one_line_naming_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # inductor cannot build
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
    result = run_cli(["train", *INDUCTOR, "trainer.max_steps=2", "--run-dir", "run"])
    assert result.returncode == 2, result.stderr[-2000:]
    assert "trainer.compile: torch.compile failed" in result.stderr
    assert "set trainer.compile=false" in result.stderr
    assert "Traceback" not in result.stderr
