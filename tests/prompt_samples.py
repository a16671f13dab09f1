"""Test helper: a small batch of prompts of mixed lengths, shared by test_sampling and test_logprobs."""

from __future__ import annotations

from othinklab.tasks import Sample, make_task


def mixed_samples() -> list[Sample]:
    """Three counting and two geometry prompts: left padding must not shift rotary positions."""
    return make_task("counting").samples(3) + make_task("geometry").samples(2)
