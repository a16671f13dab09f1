"""`othinklab.tasks`: `task.prompt` (R1-V's <think> prompt or the answer-only one) applied to samples."""

from __future__ import annotations

import pytest

from othinklab.errors import ConfigError
from othinklab.tasks import make_task, with_prompt


def test_with_prompt_copies_and_refuses_unknown():
    samples = make_task("geometry").samples(2, seed=1)
    direct = with_prompt(samples, "direct")
    assert all(s.prompt == "think" for s in samples) and all(s.prompt == "direct" for s in direct)
    assert with_prompt(samples, "think")[0] is samples[0]
    with pytest.raises(ConfigError, match="task.prompt"):
        with_prompt(samples, "chatty")
