"""`othinklab.rng`: the RNG state saved in checkpoints is plain values (loadable with weights_only)."""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from othinklab.rng import rng_state, set_rng_state


def test_rng_state_is_plain_and_round_trips_through_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
