"""Evaluation: Wilson intervals and per-prompt summaries computed from the records."""

from __future__ import annotations

import pandas as pd
import pytest

from othinklab.evaluate import evaluate, summarize, wilson_interval


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


def test_evaluate_returns_records_consistent_with_table(untrained):
    from othinklab.tasks import make_task

    model, processor = untrained
    samples = make_task("counting").samples(3)
    table, records = evaluate(model, processor, samples, num_samples=2, max_new_tokens=6, return_records=True)
    assert list(table["mode"]) == ["greedy", "sampled@T=1"]
    assert (records["mode"] == "greedy").sum() == 3 and (records["mode"] == "sampled").sum() == 6
    greedy = records[records["mode"] == "greedy"]
    assert table.loc[0, "accuracy"] == pytest.approx(greedy["accuracy"].mean())


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
