"""`make gpu-check` on a machine without CUDA: exits 0 and says why it skipped (the suite never needs a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the check runs for real (minutes)")
def test_gpu_check_skips_without_cuda():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "gpu-check: skipped: no CUDA device (torch.cuda.is_available() is False); every check needs a GPU"
    )
