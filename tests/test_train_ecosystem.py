"""A short tiny run with `train.report_to=tensorboard` and `train.eval_every`: scalars readable from the event
files, `eval/` keys in metrics.jsonl, and the training metrics unchanged by the evaluations."""

from __future__ import annotations

import pytest

from othinklab.config import load_config
from othinklab.errors import UserError
from othinklab.metrics import METRICS, read_jsonl
from othinklab.trainer import train

SMALL = [
    "model.name=tiny-init",  # the untrained tiny model: this checks plumbing, not learning
    "grpo.prompts_per_step=2",
    "grpo.num_generations=2",
    "grpo.max_completion_length=8",
    "task.num_eval=4",
    "eval.num_samples=2",
    "eval.max_new_tokens=8",
    "train.threads=1",
    "train.total_steps=4",
    "train.log_rollouts=false",
]


@pytest.mark.slow
def test_tensorboard_and_eval_every(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(
        None,
        [
            *SMALL,
            f"train.output_dir={tmp_path}",
            "train.run_name=eco",
            "train.report_to=tensorboard",
            "train.eval_every=2",
            "train.eval_prompts=3",
        ],
    )
    run = train(cfg, progress=False).run_dir
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    evaluated = [r["step"] for r in rows if "eval/greedy_accuracy" in r]
    assert evaluated == [1, 3]  # after the 2nd and 4th updates
    for r in rows:
        assert set(r) <= set(METRICS), set(r) - set(METRICS)
        if "eval/n" in r:
            assert r["eval/n"] == 3 and 0 <= r["eval/greedy_accuracy"] <= 1 and 0 <= r["eval/sampled_accuracy"] <= 1
            assert r["eval/greedy_accuracy_lo"] <= r["eval/greedy_accuracy"] <= r["eval/greedy_accuracy_hi"]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/kl")] == [0, 1, 2, 3]
    assert [e.value for e in acc.Scalars("train/kl")] == pytest.approx([r["kl/value"] for r in rows], rel=1e-5)
    assert [e.value for e in acc.Scalars("train/completions/mean_length")] == pytest.approx(
        [r["completion/length"] for r in rows], rel=1e-5
    )
    assert [e.step for e in acc.Scalars("eval/greedy_accuracy")] == [1, 3]
    assert [e.value for e in acc.Scalars("train/beta")] == pytest.approx([r["kl/beta"] for r in rows])

    # the evaluations draw from their own generator: the training metrics are those of a run without them
    plain = train(load_config(None, [*SMALL, f"train.output_dir={tmp_path}", "train.run_name=plain"]), progress=False)
    keys = ("reward/total", "kl/value", "loss/total", "completion/length")
    assert [[r[k] for k in keys] for r in read_jsonl(plain.run_dir / "metrics.jsonl")] == [
        [r[k] for k in keys] for r in rows
    ]


def test_missing_tracker_fails_before_any_file(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    cfg = load_config(None, [*SMALL, f"train.output_dir={tmp_path}", "train.report_to=mlflow"])
    with pytest.raises(UserError, match=r"othinklab\[mlflow\]"):
        train(cfg, progress=False)
    assert not list(tmp_path.iterdir())


def test_training_curves_and_live_view_show_eval_rows():
    import pandas as pd

    from othinklab.live import LiveTrainingView, status_line
    from othinklab.plots import training_curves

    rows = [{"step": s, "reward/total": 0.1 * s, "kl/beta": 0.04, "kl/value": 0.0} for s in range(4)]
    rows[1].update({"eval/greedy_accuracy": 0.25, "eval/sampled_accuracy": 0.5})
    rows[3].update({"eval/greedy_accuracy": 0.75, "eval/sampled_accuracy": 0.5})
    fig = training_curves(pd.DataFrame(rows), smooth=1)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert list(lines["eval greedy acc"].get_xdata()) == [1, 3]
    assert list(lines["eval greedy acc"].get_ydata()) == [0.25, 0.75]
    assert list(lines["eval sampled acc"].get_ydata()) == [0.5, 0.5]
    view = LiveTrainingView(total_steps=4, display=False)
    for r in rows:
        view(r)
    assert view.render_png()[:4] == b"\x89PNG"
    assert "held-out acc 0.750 greedy" in status_line(rows[3], 4, 4, 1.0, rows[3])
