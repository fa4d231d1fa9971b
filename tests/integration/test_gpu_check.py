"""benchmarks/gpu_check.py runs unattended: without CUDA it says so in one line and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check itself runs where CUDA is")
def test_the_gpu_check_skips_with_one_line_and_exit_0_without_cuda() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [
        "gpu_check: skipped: no CUDA device here (torch.cuda.is_available() is False)"
    ]
