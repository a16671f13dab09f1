"""Evaluation: Wilson intervals, per-prompt summaries, unbiased pass@k and maj@n computed from the records."""

from __future__ import annotations

import pandas as pd
import pytest

from othinklab.evaluate import (
    evaluate_tasks,
    majority_correct,
    pass_at_k,
    pass_ks,
    summarize,
    summary_table,
    wilson_interval,
)


def test_wilson_interval_closed_form():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_averages_per_prompt_first():
    rec = pd.DataFrame(
        {
            "id": ["a", "a", "b", "b"],
            "accuracy": [1.0, 0.0, 1.0, 1.0],
            "format": [1.0] * 4,
            "reward": [2.0, 1.0, 2.0, 2.0],
            "length": [10, 12, 8, 8],
        }
    )
    s = summarize(rec, "sampled")
    assert s["n"] == 2 and s["accuracy"] == pytest.approx(0.75) and s["length"] == pytest.approx(9.5)
    assert s["accuracy_lo"] < 0.75 < s["accuracy_hi"]


def test_evaluate_tasks_on_a_list_gives_records_consistent_with_the_table(untrained):
    from othinklab.tasks import make_task

    model, processor = untrained
    samples = make_task("counting").samples(3)
    records = evaluate_tasks(model, processor, samples, num_samples=2, max_new_tokens=6)
    table = summary_table(records)
    assert list(table["mode"]) == ["greedy", "sampled"] and records["eval_task"].eq("").all()
    assert (records["mode"] == "greedy").sum() == 3 and (records["mode"] == "sampled").sum() == 6
    greedy = records[records["mode"] == "greedy"]
    assert table.loc[0, "accuracy"] == pytest.approx(greedy["accuracy"].mean())
    sampled = table.loc[1]
    assert sampled["pass@1"] == pytest.approx(sampled["accuracy"])  # pass@1 is the sampled accuracy
    assert sampled["pass@1"] <= sampled["pass@2"] <= 1.0 and 0.0 <= sampled["maj@2"] <= 1.0
    assert pd.isna(table.loc[0].get("pass@1"))  # greedy draws one completion: no pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Every k-subset of n samples (c correct), counted: the definition pass_at_k must match."""
    import itertools

    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in sub) for sub in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_unbiased_estimator(n):
    for c in range(n + 1):
        for k in pass_ks(n):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k)), (n, c, k)
    assert pass_ks(8) == [1, 2, 4, 8] and pass_ks(5) == [1, 2, 4, 5]
    with pytest.raises(ValueError):
        pass_at_k(n, 0, n + 1)


def test_majority_vote_and_per_prompt_pass_columns():
    assert majority_correct(["7", "7", "3"], [True, True, False]) == 1.0
    assert majority_correct(["3", "7", "7"], [False, True, True]) == 1.0
    assert majority_correct(["3", "7"], [False, True]) == 0.0  # a tie: the answer seen first wins
    assert majority_correct([None, "", "5"], [False, False, True]) == 1.0  # no answer never votes
    rec = pd.DataFrame(
        {
            "id": ["a"] * 4 + ["b"] * 4,
            "accuracy": [1.0, 0.0, 0.0, 0.0] + [0.0] * 4,
            "predicted": ["5", "4", "4", None, "1", "2", "1", "1"],
            "format": [1.0] * 8,
            "reward": [1.0] * 8,
            "length": [5] * 8,
        }
    )
    s = summarize(rec, "sampled")
    assert s["pass@1"] == pytest.approx(0.125) and s["pass@2"] == pytest.approx(0.25) and s["pass@4"] == 0.5
    assert s["maj@4"] == 0.0  # prompt a votes "4", which is wrong
    assert s["pass@4_lo"] < 0.5 < s["pass@4_hi"]


def test_evaluate_tasks_scores_every_task_in_one_pass_and_keeps_each_prompt(untrained):
    from othinklab.evaluate import evaluate_tasks, per_prompt
    from othinklab.tasks import make_task

    model, processor = untrained
    by_task = {
        "counting:ood": make_task("counting").samples(3, split="ood", seed=5),
        "geometry:test": make_task("geometry").samples(2, split="test", seed=5),
    }
    kw = dict(num_samples=2, max_new_tokens=8, seed=3)
    records = evaluate_tasks(model, processor, by_task, **kw)
    counts = records.groupby(["eval_task", "mode"]).size().to_dict()
    assert counts == {
        ("counting:ood", "greedy"): 3,
        ("counting:ood", "sampled"): 6,
        ("geometry:test", "greedy"): 2,
        ("geometry:test", "sampled"): 4,
    }
    per = per_prompt(records)
    assert list(per["id"]) == [s.id for samples in by_task.values() for s in samples]  # evaluation order
    sampled = records[records["mode"] == "sampled"].groupby("id")["accuracy"].mean()
    assert (per.set_index("id")["sampled"] == sampled.reindex(per["id"]).to_numpy()).all()
    again = per_prompt(evaluate_tasks(model, processor, by_task, **kw))
    pd.testing.assert_frame_equal(per, again)  # seeded: the same draws
    direct = evaluate_tasks(model, processor, {"counting:ood": by_task["counting:ood"]}, prompt="direct", **kw)
    assert direct["eval_task"].eq("counting:ood").all() and len(direct) == 9
    with pytest.raises(ValueError, match="unique"):
        evaluate_tasks(model, processor, {"a": by_task["counting:ood"], "b": by_task["counting:ood"]}, **kw)
