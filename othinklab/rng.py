"""Random-number state: seeding every generator a run uses, and saving/restoring them for exact resume.

Why: "same seed, same run" and "a resumed run continues exactly" are two views of one job: knowing every
RNG the code draws from (Python, NumPy, torch CPU and CUDA). Keeping the seeding beside the state
capture means a new RNG is added to both at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when present), as plain lists, numbers and tensors.

    Plain values (no NumPy arrays, no tuples of Python objects) let a checkpoint load with
    `torch.load(weights_only=True)`, which cannot run code hidden in a crafted file.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    np_keys = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    state: dict[str, Any] = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [str(name), np_keys, int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block that seeds or draws from the global RNGs (a cache build) without moving the caller's:
    a seeded run that builds the tiny model on a fresh machine then draws what a run that loads it draws."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
