"""`task.prompt`: R1-V's <think> prompt (default, unchanged) or the answer-only prompt, in training and eval."""

from __future__ import annotations

import pytest

from othinklab.config import load_config
from othinklab.errors import ConfigError
from othinklab.runs import PromptStream, eval_samples
from othinklab.tasks import PROMPT_SUFFIX, PROMPTS, make_task, with_prompt


def test_default_prompt_is_r1v_and_unchanged():
    cfg = load_config(None, [])
    assert cfg.task.prompt == "think"
    s = PromptStream(cfg).batch(0)[0]
    assert s.prompt_text == s.problem + PROMPT_SUFFIX


@pytest.mark.parametrize("num_train", [0, 5])
def test_direct_prompt_reaches_training_and_eval_prompts(num_train):
    over = ["task.prompt=direct", "reward.format_weight=0", f"task.num_train={num_train}", "task.num_eval=3"]
    cfg, think = load_config(None, over), load_config(None, over[2:])
    direct_batch, think_batch = PromptStream(cfg).batch(1), PromptStream(think).batch(1)
    assert [s.id for s in direct_batch] == [s.id for s in think_batch]  # same data, other instruction
    assert all(s.prompt_text.endswith(PROMPTS["direct"]) and "<think>" not in s.prompt_text for s in direct_batch)
    assert all(s.prompt_text.endswith(PROMPTS["direct"]) for s in eval_samples(cfg))


def test_with_prompt_copies_and_refuses_unknown():
    samples = make_task("geometry").samples(2, seed=1)
    direct = with_prompt(samples, "direct")
    assert all(s.prompt == "think" for s in samples) and all(s.prompt == "direct" for s in direct)
    assert with_prompt(samples, "think")[0] is samples[0]
    with pytest.raises(ConfigError, match="task.prompt"):
        with_prompt(samples, "chatty")


def test_direct_prompt_needs_format_weight_zero():
    with pytest.raises(ConfigError, match="format_weight"):
        load_config(None, ["task.prompt=direct"])
