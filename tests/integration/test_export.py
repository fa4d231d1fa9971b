"""`brickwork export`: each format gives the outputs of the trained checkpoint."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brickwork.export import export_run
from brickwork.inference import load_trained
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from brickwork.loop import fit
    from tests.conftest import FAST

    run_dir = tmp_path_factory.mktemp("export") / "run"
    fit(overrides=[*FAST, "trainer.max_epochs=1"], run_dir=run_dir)
    return run_dir


def _reference(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    parts, _ = load_trained(run_dir, "best")
    inputs = torch.stack([parts.data.val[i][0] for i in range(5)])
    with torch.no_grad():
        return inputs, parts.model(inputs)


def test_torchscript_export_gives_the_same_outputs(trained: Path, tmp_path: Path) -> None:
    result = export_run(trained, "torchscript", tmp_path / "model.pt")
    inputs, expected = _reference(trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(result["path"])
    assert torch.allclose(loaded(inputs), expected, atol=1e-6)


def test_safetensors_export_via_cli_gives_the_same_weights(trained: Path) -> None:
    result = run_cli(["export", str(trained), "--format", "safetensors"])
    assert result.returncode == 0, result.stderr
    exported = load_file(trained / "export" / "model.safetensors")
    parts, _ = load_trained(trained, "best")
    state = parts.model.state_dict()
    assert all(torch.equal(exported[k], state[k]) for k in state)
    assert (trained / "export" / "config.yaml").is_file()


def test_onnx_export_gives_the_same_outputs(trained: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    result = export_run(trained, "onnx", tmp_path / "model.onnx")
    inputs, expected = _reference(trained)
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": inputs.numpy()})
    assert torch.allclose(torch.from_numpy(actual), expected, atol=1e-4)
