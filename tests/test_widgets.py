"""Widgets built and driven from Python; their DataFrame twins checked on hand-made and real rollouts."""

from __future__ import annotations

import pandas as pd
import pytest

from othinklab.widgets import RewardInspector, RolloutInspector, rescore, rollout_view


def _rollouts() -> pd.DataFrame:
    rows = []
    texts = {
        (0, 0): ["<think>a</think><answer>3</answer>", "<think>b</think><answer>4</answer>"],
        (0, 1): ["<think>c</think><answer>5</answer>", "<think>d</think><answer>5</answer>"],
        (1, 0): ["<answer>3</answer>", "The answer is 3."],
        (1, 1): ["<think>e</think><answer>2</answer>", "<think>f</think><answer>5</answer>"],
    }
    answers = {0: "3", 1: "5"}
    for (step, group), comps in texts.items():
        for i, c in enumerate(comps):
            acc = float(f"<answer>{answers[group]}</answer>" in c)
            fmt = float(c.startswith("<think>"))
            rows.append(
                {
                    "step": step,
                    "group": group,
                    "sample": i,
                    "prompt_id": f"p{group}",
                    "completion": c,
                    "answer": answers[group],
                    "accuracy": acc,
                    "format": fmt,
                    "reward": acc + fmt,
                    "advantage": 0.0,
                    "length": 5,
                }
            )
    return pd.DataFrame(rows)


def test_rollout_view_filters():
    r = _rollouts()
    assert len(rollout_view(r, 0)) == 4
    assert list(rollout_view(r, 0, only="failures")["completion"]) == ["<think>b</think><answer>4</answer>"]
    assert set(rollout_view(r, 0, only="zero-spread groups")["prompt_id"]) == {"p1"}  # both completions scored 2
    assert len(rollout_view(r, 1, only="format errors")) == 2
    assert len(rollout_view(r, 1, prompt="p1")) == 2
    with pytest.raises(ValueError):
        rollout_view(r, 0, only="nonsense")


def test_rescore_changes_rewards_and_advantages():
    r = _rollouts()
    same = rescore(r, format_weight=1.0)
    assert (same["new_reward"] == same["reward"]).all()
    no_format = rescore(r, format_weight=0.0)
    step1_group0 = no_format[(no_format.step == 1) & (no_format.group == 0)]
    # "<answer>3</answer>" is right without the think tags: with alpha = 0 it beats the prose answer
    assert step1_group0["new_reward"].tolist() == [1.0, 0.0]
    assert step1_group0["new_advantage"].iloc[0] > 0 > step1_group0["new_advantage"].iloc[1]


def test_rollout_inspector_responds_to_the_slider():
    insp = RolloutInspector(rollouts=_rollouts())
    first = insp.table.value
    assert "&lt;answer&gt;4&lt;/answer&gt;" in first and "step 0" in insp.header.value
    insp.step.value = 1
    assert insp.table.value != first and "step 1" in insp.header.value
    assert list(insp.view()["completion"])[:2] == ["<answer>3</answer>", "The answer is 3."]
    insp.only.value = "format errors"
    assert len(insp.view()) == 2 and "showing 2" in insp.header.value
    insp.prompt.value = "p1"
    assert len(insp.view()) == 0


def test_reward_inspector_alpha():
    insp = RewardInspector(rollouts=_rollouts())
    before = insp.result()["new_reward"].sum()
    insp.alpha.value = 0.0
    assert insp.result()["new_reward"].sum() < before
    insp.parser.value = "exact string"
    assert insp.result()["new_accuracy"].sum() == _rollouts()["accuracy"].sum()


@pytest.mark.slow
def test_inspector_on_a_real_run(tmp_path, base_dir):
    from othinklab.config import load_config
    from othinklab.trainer import train

    cfg = load_config(
        None,
        [
            "grpo.prompts_per_step=2",
            "grpo.num_generations=4",
            "train.total_steps=2",
            f"train.output_dir={tmp_path}",
            "train.threads=1",
        ],
    )
    run = train(cfg, progress=False).run_dir
    insp = RolloutInspector(run)
    shown = insp.table.value
    assert len(insp.view()) == 8
    insp.step.value = 1
    assert insp.table.value != shown
    re = RewardInspector(run).result()
    assert re["new_reward"].tolist() == pytest.approx(re["reward"].tolist())  # same reward, same scores
    assert re["new_advantage"].tolist() == pytest.approx(re["advantage"].tolist(), abs=1e-5)
