"""Shared fixtures: the tiny model, untrained and warmed-up, built once per test session.

The base is built into `$OTHINKLAB_HOME` (CI points it at a fresh temporary directory, so the
first-build path runs every time) and reused from the cache afterwards.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=".*kernels.*")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def untrained():
    """(model, processor) of the untrained tiny Qwen2-VL, with its weights perturbed so outputs vary."""
    from othinklab.tiny import build_untrained

    model, processor = build_untrained()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model, processor


@pytest.fixture(scope="session")
def base_dir():
    """Directory of the warmed-up tiny base (built on first use, ~2 minutes on 2 cores)."""
    from othinklab.warmup import ensure_base

    return ensure_base(progress=False)
