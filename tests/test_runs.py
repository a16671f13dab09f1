"""`othinklab.runs`: run directories (a config from an older version compared field by field) and the
prompt stream and evaluation samples under `task.prompt`."""

from __future__ import annotations

import pytest

from othinklab.config import load_config
from othinklab.errors import UserError
from othinklab.runs import PromptStream, eval_samples
from othinklab.tasks import PROMPT_SUFFIX, PROMPTS


def test_a_config_from_an_older_version_is_compared_field_by_field(tmp_path):
    """A config.yaml without a field this version added takes its default; a real difference is named."""
    import yaml

    from othinklab.config import load_config, to_yaml
    from othinklab.runs import prepare_run_dir

    cfg = load_config(None, [f"train.output_dir={tmp_path}", "train.run_name=r"])
    run = prepare_run_dir(cfg, resume=False)
    old = yaml.safe_load(to_yaml(cfg))
    del old["grpo"]["logprob_chunk"]  # "an older version" did not have it
    old["kl"]["beta_max"] = 0.2
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')  # the run completed a step
    with pytest.raises(UserError, match=r"differs in kl\.beta_max\): kl\.beta_max was '0\.2', now '0\.1'") as info:
        prepare_run_dir(cfg, resume=True)
    assert "logprob_chunk" not in str(info.value).split("A run that")[0]


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
