"""Widgets built and driven from Python; their DataFrame twins checked on hand-made and real rollouts."""

from __future__ import annotations

import pandas as pd
import pytest

from othinklab.metrics import read_rollouts
from othinklab.widgets import (
    RewardInspector,
    RolloutInspector,
    kl_scale,
    rescore,
    rollout_view,
    token_colour,
    token_html,
)


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
            "train.learning_rate=1e-3",
            # the converged base often answers a small group alike: a hotter sampler gives the groups spread
            "grpo.temperature=1.5",
        ],
    )
    from othinklab.live import LiveTrainingView

    live = LiveTrainingView(cfg.train.total_steps)
    run = train(cfg, progress=False, callbacks=[live]).run_dir
    assert len(live.frame()) == 2 and live.chart.value.startswith("<svg") and live.image.value == b""
    live.finish()  # the full figure, once
    assert live.image.value[:4] == b"\x89PNG"
    insp = RolloutInspector(run)
    shown = insp.table.value
    assert len(insp.view()) == 8
    assert insp.shown_images() and insp.images.children  # the prompt images the trainer saved
    assert "log p =" in shown  # tokens coloured by the logged log-probs
    insp.step.value = 1
    assert insp.table.value != shown
    assert set(insp.view()["completion"]) != set(rollout_view(insp.rollouts, 0)["completion"])
    insp.colour.value = "KL to reference"
    assert "KL = " in insp.table.value
    re = RewardInspector(run).result()
    assert re["new_reward"].tolist() == pytest.approx(re["reward"].tolist())  # same reward, same scores
    assert re["new_advantage"].tolist() == pytest.approx(re["advantage"].tolist(), abs=1e-5)
    _check_logged_tokens(read_rollouts(run))
    # the inspector's prompt images are the PNGs the trainer saved; colouring by KL and log-prob differ
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in insp.shown_images().values())
    assert insp.images.children[0].children[0].value[:4] == b"\x89PNG"
    kl_table = insp.table.value
    insp.colour.value = "log-prob"
    assert insp.table.value != kl_table and "log p =" in insp.table.value
    # re-scoring: alpha 0 is accuracy alone; a laxer parser never finds fewer right answers
    acc_only = rescore(insp.rollouts, format_weight=0.0)
    assert (acc_only["new_reward"] == acc_only["new_accuracy"]).all()
    lenient = rescore(insp.rollouts, accuracy_fn=_last_number)
    assert lenient["new_accuracy"].mean() >= re["new_accuracy"].mean()


def _last_number(completion: str, solution: str) -> float:
    """Notebook 03's lenient parser: the last number anywhere in the text, tags or not."""
    import re

    nums, gold = re.findall(r"-?\d+(?:\.\d+)?", completion), re.findall(r"-?\d+(?:\.\d+)?", solution)
    return float(bool(nums) and bool(gold) and float(nums[-1]) == float(gold[-1]))


def _check_logged_tokens(rollouts: pd.DataFrame) -> None:
    """What notebook 03 used to assert of a real run's per-token logs (moved here from its check cell)."""
    import re

    for _, r in rollouts.iterrows():
        assert len(r["tokens"]) == len(r["token_logprobs"]) == len(r["token_kl"]) == r["length"]
        assert "\ufffd" not in "".join(r["tokens"])  # split characters merged, broken bytes escaped
        joined = re.sub(r"<\|[a-z_]+\|>", "", "".join(r["tokens"])).replace(" ", "")
        if "\ufffd" not in r["completion"]:  # the completion text itself decodes broken bytes as U+FFFD
            assert joined.startswith(r["completion"].replace(" ", "")), (r["tokens"], r["completion"])
        assert max(r["token_logprobs"]) <= 0 and min(r["token_kl"]) >= 0
        html_ = token_html(r["tokens"], r["token_kl"], "KL to reference")
        assert html_.count("<span") == 1 + sum(t != "" for t in r["tokens"])  # one span per shown piece
    first, last = rollouts["step"].min(), rollouts["step"].max()
    assert all(max(k) == 0 for k in rollouts.loc[rollouts["step"] == first, "token_kl"])  # policy = reference
    assert max(max(k) for k in rollouts.loc[rollouts["step"] == last, "token_kl"]) > 0  # not after an update


def test_token_html_colours_by_logprob_and_kl():
    tokens, logp, kl = ["<think>", " 3", "</answer>"], [0.0, -2.0, -0.1], [0.0, 0.2, 0.05]
    h = token_html(tokens, logp, "log-prob")
    assert h.count("<span") == 4 and "&lt;think&gt;" in h and "<think>" not in h  # tokens escaped
    assert "rgba(220,50,47,0.00)" in h and f"rgba(220,50,47,{1 - 2.718281828**-2:.2f})" in h  # 1 - p
    assert "title='log p = -2.000 (p = 0.14)'" in h
    h = token_html(tokens, kl, "KL to reference")
    assert "rgba(38,139,210,1.00)" in h and "rgba(38,139,210,0.25)" in h  # scaled by the largest KL, 0.2
    assert "rgba(38,139,210,0.50)" in token_html(tokens, kl, "KL to reference", scale=0.1)  # capped at 1
    assert "background:transparent" in token_html(tokens, None) and "title" not in token_html(tokens, None)
    assert token_colour(float("nan"), "log-prob") == "transparent"
    with pytest.raises(ValueError):
        token_html(tokens, [0.0], "log-prob")
    with pytest.raises(ValueError):
        token_html(tokens, logp, "entropy")


def _with_tokens(r: pd.DataFrame) -> pd.DataFrame:
    r = r.copy()
    r["tokens"] = [[c[: len(c) // 2], c[len(c) // 2 :]] for c in r["completion"]]
    r["token_logprobs"] = [[-0.1, -3.0] for _ in range(len(r))]
    r["token_kl"] = [[0.0, 0.01 * (s + 1)] for s in r["step"]]
    return r


def test_rollout_inspector_colours_tokens_and_shows_images(tmp_path):
    from PIL import Image

    r = _with_tokens(_rollouts())
    (tmp_path / "images").mkdir()
    for pid in ("p0", "p1"):
        Image.new("RGB", (28, 28), "red" if pid == "p0" else "blue").save(tmp_path / "images" / f"{pid}.png")
    r["image"] = [f"images/{p}.png" for p in r["prompt_id"]]
    r.loc[r["prompt_id"] == "p1", "image"] = "images/missing.png"  # a missing file is skipped, not an error
    insp = RolloutInspector(rollouts=r)
    insp.run_dir = tmp_path
    insp.refresh()
    assert list(insp.shown_images()) == ["p0"]
    assert insp.images.children[0].children[0].value == (tmp_path / "images" / "p0.png").read_bytes()
    lp = insp.table.value
    assert "log p = -3.000" in lp and lp.count("class='othinklab-tokens'") == 4
    insp.colour.value = "KL to reference"
    kl = insp.table.value
    assert kl != lp and "KL = 0.0100" in kl and "0.0100" in insp.legend.value
    assert kl_scale(insp.view()) == pytest.approx(0.01)
    insp.colour.value = "none"
    assert "othinklab-tokens" not in insp.table.value and "&lt;answer&gt;4&lt;/answer&gt;" in insp.table.value
    insp.step.value = 1
    assert "KL" not in insp.legend.value and "step 1" in insp.header.value


def test_live_view_collects_rows_and_redraws():
    from othinklab.live import LiveTrainingView, status_line

    rows = [
        {
            "step": s,
            "reward/total": 0.5 + s / 10,
            "reward/accuracy": 0.2,
            "reward/format": 0.6,
            "kl/value": 0.01 * s,
            "kl/beta": 0.07 - 0.01 * s,
            "completion/length": 20.0,
        }
        for s in range(5)
    ]
    view = LiveTrainingView(total_steps=5, every=2)
    chart = view.chart
    svgs = []
    for row in rows:
        view(row)
        svgs.append(view.chart.value)
    assert view.frame()["reward/total"].tolist() == [r["reward/total"] for r in rows]
    assert view.redraws == 3 and view.progress.value == 5  # after steps 2 and 4, and the last one
    # the same widget's value replaced in place: an SVG, no PNG rendered per step
    assert view.chart is chart and svgs[0] == "" and svgs[1].startswith("<svg") and svgs[3] != svgs[1]
    assert view.image.value == b"" and "reward/total 0.900" in svgs[4] and svgs[4].count("<polyline") == 6
    view.finish()
    assert view.image.value[:4] == b"\x89PNG"  # the full matplotlib figure, drawn once at the end
    assert "step 5/5" in view.status.value and "reward 0.900" in view.status.value
    quiet = LiveTrainingView(total_steps=2, display=False)
    quiet(rows[0])
    assert quiet.widget is None and len(quiet.frame()) == 1 and quiet.render_png()[:4] == b"\x89PNG"
    assert "~0 s left" in status_line(rows[0], 1, 1, 3.0)


def test_token_pieces_merge_split_characters_and_escape_broken_bytes(untrained):
    """Byte-level BPE splits "é" and "世" over tokens; the logged pieces show them whole (no U+FFFD), aligned
    one-to-one with the tokens, and joined they are the decoded text."""
    from othinklab.token_text import readable_pieces, token_pieces

    tok = untrained[1].tokenizer
    text = "héllo 世界 <answer> 3 </answer>"
    ids = tok.encode(text)
    naive = [tok.decode([i]) for i in ids]
    assert "\ufffd" in "".join(naive)  # what the log showed before
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == tok.decode(ids) == text
    assert "\ufffd" not in "".join(pieces) and "世" in pieces and "" in pieces
    cut = token_pieces(tok, ids[: naive.index(" ") + 2])  # cut inside "世": its first byte as an escape
    assert cut[-1].startswith("\\x") and "\ufffd" not in "".join(cut)
    assert readable_pieces([b"\xff", b"ok"]) == ["\\xff", "ok"]
    html_ = token_html(pieces, [-0.1] * len(pieces))
    assert "世" in html_ and html_.count("<span") == 1 + sum(p != "" for p in pieces)  # one span per character
