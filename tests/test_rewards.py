"""Rewards (docs/paper.md, Eq. 1): answer extraction, format, accuracy equality, and never raising; a user's
reward function that hangs or calls sys.exit scores 0 and is named, and repeated timeouts stop the run."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from othinklab.rewards import (
    REWARD_FUNCS,
    RewardBreakdown,
    accuracy_reward,
    answers_equal,
    combine,
    extract_answer,
    format_reward,
    normalize_answer,
    score,
)

LONG = "<think>" + "x" * 100_000 + "</think><answer>" + "9" * 100_000 + "</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>3</answer>", "3"),
        ("<answer>  3 \n</answer>", "3"),
        ("<think>a</think><answer>\nline1\nline2\n</answer>", "line1\nline2"),
        ("<answer>1</answer> and <answer>2</answer>", "2"),  # last wins
        ("<answer>1</answer> <answer>2", "1"),  # unclosed last: last *complete* wins
        ("<answer>2", None),
        ("2</answer>", None),
        ("", None),
        ("no tags", None),
        ("<answer></answer>", ""),
        ("<answer><answer>5</answer></answer>", "<answer>5"),  # nested: non-greedy to first close
        ("<answer>七</answer>", "七"),
        (None, None),
        (42, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>3</answer>", 1.0),
        ("<think>a\nb</think>\n\n<answer>\n3\n</answer>", 1.0),
        ("  <think>a</think> <answer>3</answer>\n", 1.0),  # surrounding whitespace allowed
        ("<think></think><answer></answer>", 1.0),
        ("<think>a</think><answer>3</answer> trailing", 0.0),
        ("lead <think>a</think><answer>3</answer>", 0.0),
        ("<answer>3</answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<think>a</think><answer>3", 0.0),
        ("<think>a<answer>3</answer>", 0.0),
        ("<answer>3</answer><think>a</think>", 0.0),
        ("<think>a</think>text<answer>3</answer>", 0.0),
        ("<think>思考</think><answer>三</answer>", 1.0),
        ("", 0.0),
        (None, 0.0),
        (LONG, 1.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward(text) == expected


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("140°", "140"),
        ("140^\\circ", "140"),
        ("140^{\\circ}", "140°"),
        ("3.0", "3"),
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{1}{2}", "1/2"),
        ("$3$", "3"),
        ("5 cm", "5"),
        ("30 degrees", "30"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("Yes", " yes "),
        ("A", "a"),
        ("7.", "7"),
    ],
)
def test_answers_equal(pred, gold):
    assert answers_equal(pred, gold)
    assert accuracy_reward(f"<think>t</think><answer>{pred}</answer>", f"<answer> {gold} </answer>") == 1.0


@pytest.mark.parametrize(
    "pred, gold",
    [("3", "4"), ("2\\sqrt{3}", "2"), ("1e3", "1"), ("yes", "no"), ("", "0"), ("0.5", "0.6"), ("x", "y")],
)
def test_answers_not_equal(pred, gold):
    assert not answers_equal(pred, gold)
    assert accuracy_reward(f"<answer>{pred}</answer>", f"<answer>{gold}</answer>") == 0.0


@pytest.mark.parametrize(
    "text, solution, expected",
    [
        ("<answer>3</answer>", "3", 1.0),  # solution without tags: the whole string
        ("<answer>3</answer>", "<answer> 3 </answer>", 1.0),
        ("3", "3", 0.0),  # no answer tag in completion
        ("<answer>3", "3", 0.0),
        ("<answer>1</answer><answer>3</answer>", "3", 1.0),
        ("<answer>3</answer><answer>1</answer>", "3", 0.0),
        (None, "3", 0.0),
        ("<answer>3</answer>", None, 0.0),
        (LONG, "9" * 100_000, 1.0),  # very long: plain string compare, no parser
        (LONG, "9" * 99_999, 0.0),
        ("<answer>" + "(" * 300 + "</answer>", "3", 0.0),
        ("<answer>\\frac{</answer>", "3", 0.0),
        ("<answer>∞ ∑ 🙂</answer>", "3", 0.0),
    ],
)
def test_accuracy_reward(text, solution, expected):
    assert accuracy_reward(text, solution) == expected


def test_total_and_score():
    good = "<think>count</think><answer>3</answer>"
    assert combine(accuracy_reward(good, "<answer>3</answer>"), format_reward(good), 1.0) == 2.0
    assert combine(accuracy_reward(good, "<answer>4</answer>"), format_reward(good), 1.0) == 1.0
    assert combine(accuracy_reward("<answer>3</answer>", "3"), format_reward("<answer>3</answer>"), 0.5) == 1.0
    assert combine(accuracy_reward(good, "3"), format_reward(good), 0.0) == 1.0
    assert score(good, "3", format_weight=0.5) == RewardBreakdown(accuracy=1.0, format=1.0, total=1.5)
    assert score(None, None) == RewardBreakdown(0.0, 0.0, 0.0)


def test_registry():
    assert set(REWARD_FUNCS) == {"accuracy", "format"}
    text = "<think>t</think><answer>3</answer>"
    assert REWARD_FUNCS["accuracy"](text, "3") == 1.0
    assert REWARD_FUNCS["format"](text, "4") == 1.0


NASTY = [
    None,
    "",
    "<",
    "<answer>",
    "</answer><answer>",
    "<answer>\x00\x01</answer>",
    "<answer>" + "\\" * 150 + "</answer>",
    "<answer>" + "{" * 150 + "</answer>",
    "<answer>" + "^" * 150 + "</answer>",
    "<answer>" + "1/0" + "</answer>",
    "<answer>$$$$</answer>",
    "<answer>\\begin{matrix}</answer>",
    "<answer>10**10**10</answer>",
    "<answer>" + "{" * 75 + "}" * 75 + "</answer>",
    "<answer>2^{2^{2^{2^{2^{10}}}}}</answer>",
    "<answer>nan</answer>",
    "<answer>inf</answer>",
    "<think>" * 1000 + "</think>" * 1000,
    LONG,
    b"<answer>3</answer>",
]


@pytest.mark.parametrize("text", NASTY)
@pytest.mark.parametrize("solution", ["3", "<answer>140°</answer>", "\\frac{1}{2}", "", None])
def test_rewards_never_raise(text, solution):
    for fn in REWARD_FUNCS.values():
        assert fn(text, solution) in (0.0, 1.0)
    assert score(text, solution).total in (0.0, 1.0, 2.0)


def test_works_off_main_thread():
    results = []

    def work():
        results.append(accuracy_reward("<answer>\\frac{3}{6}</answer>", "0.5"))
        results.append(accuracy_reward("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}"))
        results.append(accuracy_reward("<answer>4</answer>", "\\sqrt{15}"))

        # pathological inputs have no timeout off the main thread: the guards must keep them fast
        results.append(accuracy_reward("<answer>" + "{" * 75 + "}" * 75 + "</answer>", "3"))
        results.append(accuracy_reward("<answer>10^{10^{10}}</answer>", "3"))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert results == [1.0, 1.0, 0.0, 0.0, 0.0]


# Real gold answers from R1-V's GeoQA test file (row number and `ground_truth`), and how a model may spell them.
GEOQA_GOLD = {
    json.loads(line)["ground_truth"]: json.loads(line)["row"]
    for line in (Path(__file__).parent / "data" / "geoqa_test_gold_excerpt.jsonl").read_text().splitlines()
}
SPELLINGS = {
    "2√{3}": ["2\\sqrt{3}", "2 \\sqrt{3}", "\\sqrt{12}", "2\\sqrt 3"],
    "√{3}": ["\\sqrt{3}", "\\sqrt3"],
    "\\frac{√{3}}{2}": ["\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"],
    "2√{15}米": ["2\\sqrt{15}", "2\\sqrt{15} m"],
    "9πcm^{2}": ["9\\pi", "9π", "9\\pi cm^2"],
    "16π平方米": ["16\\pi"],
    "8cm": ["8", "8 cm", "8.0"],
    "9米": ["9", "9m"],
    "(√{3}+1)小时": ["\\sqrt{3}+1", "1+\\sqrt{3}"],
    "\\frac{24}{5}cm": ["\\frac{24}{5}", "4.8", "\\dfrac{24}{5}"],
    "140°": ["140", "140^\\circ"],
    "5cm^2^": ["5"],
    "400cm²": ["400"],
    "\\frac{2√{5}}{5}": ["\\frac{2\\sqrt{5}}{5}", "\\frac{2}{\\sqrt{5}}"],
    "6√{3}海里": ["6\\sqrt{3}"],
    "2π": ["2\\pi"],
}
WRONG = {"2√{3}": "3\\sqrt{2}", "8cm": "9", "2π": "2", "16π平方米": "16", "\\frac{24}{5}cm": "24", "√{3}": "3"}


@pytest.mark.parametrize("gold", sorted(SPELLINGS))
def test_geoqa_notations_score_like_their_value(gold):
    assert gold in GEOQA_GOLD  # every case is a real GeoQA test answer
    for pred in SPELLINGS[gold] + [gold]:
        assert accuracy_reward(f"<think>.</think><answer>{pred}</answer>", f"<answer>{gold}</answer>") == 1.0, pred
    if gold in WRONG:
        assert accuracy_reward(f"<answer>{WRONG[gold]}</answer>", gold) == 0.0


def test_units_are_only_stripped_after_a_number():
    assert normalize_answer("8cm") == "8" and normalize_answer("am") == "am" and normalize_answer("x m") == "x m"


# --------------------------------------------------------------------------- class 9: reward code that hangs or exits
def _reward_file(tmp: Path, body: str) -> str:
    path = tmp / "my_reward.py"
    path.write_text("import sys, time\n" + body)
    return f"{path}:acc"


def test_a_reward_that_never_returns_scores_0_and_then_stops_the_run(tmp_path, monkeypatch):
    from othinklab import rewards
    from othinklab.errors import TrainingError

    fn = rewards.load_reward_function(
        _reward_file(tmp_path, "def acc(c, s):\n    if c == 'ok':\n        return 1.0\n    time.sleep(30)\n"),
        timeout_s=0.05,
    )
    breakdown, error = rewards.safe_score("hang", "<answer> 3 </answer>", accuracy_fn=fn)
    assert breakdown.total == 0.0 and "reward.timeout_s=0.05" in error
    assert rewards.safe_score("ok", "x", format_weight=0.0, accuracy_fn=fn)[0].accuracy == 1.0  # resets the count
    with pytest.raises(TrainingError, match="in a row"):
        for _ in range(rewards.MAX_TIMEOUTS_IN_A_ROW):
            rewards.safe_score("hang", "x", accuracy_fn=fn)


@pytest.mark.parametrize("body", ["sys.exit(0)", "raise SystemExit(3)", "raise GeneratorExit()"])
def test_sys_exit_inside_a_reward_is_a_reward_error_not_a_successful_exit(body, tmp_path):
    from othinklab import rewards

    fn = rewards.load_reward_function(_reward_file(tmp_path, f"def acc(c, s):\n    {body}\n"), timeout_s=5)
    breakdown, error = rewards.safe_score("x", "y", accuracy_fn=fn)
    assert breakdown.total == 0.0 and "raised inside the reward function" in error


def test_sys_exit_while_importing_a_reward_module_is_a_config_error(tmp_path):
    from othinklab import rewards
    from othinklab.errors import ConfigError

    with pytest.raises(ConfigError, match="SystemExit"):
        rewards.load_reward_function(_reward_file(tmp_path, "sys.exit(0)\ndef acc(c, s):\n    return 1\n"))


@pytest.mark.slow
def test_a_hanging_reward_ends_a_real_training_run_with_exit_2(tmp_path, capsys):
    """The whole path: `othinklab train` with a reward that sleeps stops with one paragraph, exit 2."""
    from othinklab.cli import main

    spec = _reward_file(tmp_path, "def acc(c, s):\n    time.sleep(5)\n")
    args = ["train", "model.name=tiny-init", f"train.output_dir={tmp_path}", "train.run_name=r", "train.threads=1",
            "grpo.prompts_per_step=4", "grpo.num_generations=2", "grpo.max_completion_length=4", "task.num_eval=2",
            "train.total_steps=1", f"reward.accuracy_function={spec}", "reward.timeout_s=0.01"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "did not return within reward.timeout_s=0.01" in err and "Traceback" not in err
