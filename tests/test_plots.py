"""Plots: figures from DataFrames, saved and checked non-empty; the paper's numbers load with their source;
training curves and the live view show `eval/` rows."""

from __future__ import annotations

import pandas as pd

from othinklab import kl, plots


def _png_size(fig, path) -> int:
    fig.savefig(path)
    return path.stat().st_size


def test_training_curves_and_schedules(tmp_path):
    m = pd.DataFrame(
        {
            "step": range(20),
            "reward/total": [i / 20 for i in range(20)],
            "reward/accuracy": 0.3,
            "reward/format": 0.9,
            "kl/value": 0.01,
            "kl/beta": [kl.grpo_d_beta(s, 20, 0.04, 0.1) for s in range(20)],
            "completion/length": 30.0,
        }
    )
    fig = plots.training_curves(m)
    assert len(fig.axes) == 4 and _png_size(fig, tmp_path / "c.png") > 5000  # three panels + the beta twin axis
    fig = plots.beta_schedules({"grpo_d": kl.make_schedule("grpo_d", total_steps=10, beta_min=0.0, beta_max=0.02)}, 10)
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata())[3] == 0.0 and _png_size(fig, tmp_path / "b.png") > 5000


def test_paper_results_and_overlay(tmp_path):
    paper = plots.paper_results()
    row = paper[
        (paper.model == "Qwen2-VL-2B-Instruct")
        & (paper.method == "grpo_d")
        & (paper.train_task == "counting")
        & (paper.eval_task == "counting")
    ]
    assert float(row["accuracy"].iloc[0]) == 76.5
    assert (
        open(plots.__file__.replace("othinklab/plots.py", "data/paper_results.csv")).readline().startswith("# source:")
    )
    results = pd.DataFrame(
        [
            {"method": m, "train_task": t, "eval_task": e, "greedy_accuracy": 0.5}
            for m in ("base", "sft", "grpo", "grpo_d")
            for t in ("counting", "geometry")
            for e in ("counting:ood", "geometry:test")
        ]
    )
    fig = plots.cross_task_bars(results, paper=paper)
    markers = fig.axes[0].collections[0].get_offsets()[:, 1]
    assert 76.5 in list(markers) and _png_size(fig, tmp_path / "x.png") > 5000


def test_reward_components_per_step(tmp_path):
    r = pd.DataFrame(
        {
            "step": [0, 0, 0, 0, 1, 1, 1, 1],
            "accuracy": [1, 1, 0, 0, 1, 1, 1, 0],
            "format": [1, 0, 1, 0, 1, 1, 1, 1],
        }
    )
    r["reward"] = r["accuracy"] + r["format"]
    table = plots.reward_component_table(r)
    assert list(table.columns) == list(plots.OUTCOMES)
    assert table.loc[0].tolist() == [0.25, 0.25, 0.25, 0.25]
    assert table.loc[1].tolist() == [0.75, 0.0, 0.25, 0.0]  # outcomes never seen are 0, not missing
    fig = plots.reward_components(r)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert len(bars) == 8 and sum(bars) == 2.0  # 4 outcomes x 2 steps, each step stacks to 1
    assert _png_size(fig, tmp_path / "rc.png") > 5000


def test_cross_task_heatmap_with_paper(tmp_path):
    acc = {"base": 0.3, "sft": 0.6, "grpo": 0.5, "grpo_d": 0.55}
    results = pd.DataFrame(
        [
            {"method": m, "train_task": t, "eval_task": e, "seed": s, "greedy_accuracy": acc[m] + 0.1 * s}
            for m in acc
            for t in ("counting", "geometry")
            for e in ("counting:ood", "geometry:test")
            for s in (0, 1)
        ]
    )
    fig = plots.cross_task_heatmap(results, paper=plots.paper_results())
    ours = [t.get_text() for t in fig.axes[0].texts]
    paper = [t.get_text() for t in fig.axes[1].texts]
    assert len(ours) == 16 and ours.count("65.0") == 4  # sft: mean of 0.6 and 0.7, on 2 x 2 cells
    assert "76.5" in paper and "3.5" in paper and paper.count("") > 0  # paper cells left blank where not reported
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][:4] == [
        "counting · base",
        "counting · sft",
        "counting · grpo",
        "counting · grpo_d",
    ]
    assert _png_size(fig, tmp_path / "h.png") > 5000
    assert len(plots.cross_task_heatmap(results).axes) == 1


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
