"""Ablation presets (known to `ablation_presets.find_preset`, within the hour budget), the KL-to-base measurement and the
mechanism table, the study's generated block, and the `ablate-smoke` preset end to end."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from othinklab import ablations, grid, plots
from othinklab.ablation_presets import find_preset
from othinklab.errors import UserError
from othinklab.kl import schedule_from_config

ROOT = Path(__file__).resolve().parent.parent


def _make_reports():
    spec = importlib.util.spec_from_file_location("make_reports", ROOT / "scripts" / "make_reports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(preset: str, method: str):
    p = find_preset(preset)
    m = next(m for m in p.methods if m.name == method)
    return grid.cell_config(p, m, "counting", 0, grid.Path("/tmp/unused"))


def test_presets_are_looked_up_not_registered_by_import():
    assert not set(ablations.ABLATIONS) & set(grid.PRESETS)  # importing ablations changed nothing in the grid
    assert find_preset("ablate-loss") is ablations.ABLATIONS["ablate-loss"]
    assert find_preset("powered") is grid.PRESETS["powered"]
    with pytest.raises(UserError, match="ablate-explore"):
        find_preset("ablate-nothing")


def test_presets_are_paired_and_fit_the_hour():
    for name in (*ablations.FULL, "ablate-smoke"):
        p = find_preset(name)
        names = [m.name for m in p.methods]
        assert "grpo_d" in names and "base" in names
        assert all(c.worse in names and c.better in names for c in p.all_claims())
        assert {c.worse for c in p.all_claims()} <= {"grpo_d", "two_updates"}
    for name in ablations.FULL:
        assert len(find_preset(name).seeds) >= 3
    total = sum(ablations.ablation_seconds(find_preset(n)) for n in ablations.FULL)
    assert total <= 3600 and total > grid.estimate_seconds(find_preset("ablate-loss"))


def test_presets_cover_the_issue_grid():
    explore = {_config("ablate-explore", m.name).kl.explore_frac for m in find_preset("ablate-explore").methods[1:]}
    assert explore == {0.1, 0.3, 0.5, 0.7}
    ranges = {
        (c.kl.beta_min, c.kl.beta_max)
        for c in (_config("ablate-beta", m.name) for m in find_preset("ablate-beta").methods[1:])
    }
    assert ranges == {(0.04, 0.1), (0.0, 0.02), (0.02, 0.05), (0.08, 0.2)}
    shapes = {}
    for m in find_preset("ablate-schedule").methods[1:]:
        cfg = _config("ablate-schedule", m.name)
        s = schedule_from_config(cfg.kl, cfg.train.total_steps)
        shapes[m.name] = (s.name, s(0), s(cfg.train.total_steps))
    assert {v[0] for v in shapes.values()} == {"constant", "linear", "cosine", "grpo_d", "adaptive"}
    assert shapes["linear_up"][1:] == pytest.approx((0.04, 0.1)) and shapes["linear_down"][1:] == pytest.approx(
        (0.1, 0.04)
    )
    loss = {m.name: _config("ablate-loss", m.name).grpo for m in find_preset("ablate-loss").methods[1:]}
    assert loss["dr_grpo"].aggregation == "dr_grpo" and loss["dr_grpo"].scale_rewards == "none"
    assert loss["clip_higher"].epsilon_high == 0.28 and loss["clip_higher"].num_iterations == 2
    assert loss["mask_truncated"].mask_truncated_completions and loss["token_mean"].aggregation == "token"
    assert loss["grpo_d"] == _config("ablate-explore", "grpo_d").grpo  # the same default everywhere


def _results():
    rows = []
    for ev, base in (("counting:ood", 0.30), ("geometry:test", 0.50)):
        rows.append({"method": "base", "train_task": "counting", "seed": 0, "eval_task": ev, "greedy_accuracy": base})
    for seed, (same, cross) in enumerate(((0.40, 0.45), (0.35, 0.52))):
        rows.append(
            {
                "method": "grpo_d",
                "train_task": "counting",
                "seed": seed,
                "eval_task": "counting:ood",
                "greedy_accuracy": same,
            }
        )
        rows.append(
            {
                "method": "grpo_d",
                "train_task": "counting",
                "seed": seed,
                "eval_task": "geometry:test",
                "greedy_accuracy": cross,
            }
        )
    return pd.DataFrame(rows)


def test_mechanism_frame_by_hand():
    kl = pd.DataFrame(
        {"method": ["grpo_d", "grpo_d"], "train_task": ["counting"] * 2, "seed": [0, 1], "kl_same": [0.2, 0.1]}
    )
    mech = ablations.mechanism_frame(_results(), kl).sort_values("seed")
    assert mech["same_task_gain"].tolist() == pytest.approx([10.0, 5.0])
    assert mech["cross_task_change"].tolist() == pytest.approx([-5.0, 2.0])
    assert mech["kl_same"].tolist() == [0.2, 0.1]
    fig = plots.kl_vs_transfer(mech)
    assert len(fig.axes) == 2
    points = fig.axes[1].collections[0].get_offsets()
    assert points[:, 0].tolist() == pytest.approx([0.2, 0.1]) and points[:, 1].tolist() == pytest.approx([-5.0, 2.0])
    with pytest.raises(ValueError, match="base"):
        ablations.mechanism_frame(_results()[lambda d: d.method != "base"], kl)


def test_kl_vs_transfer_with_a_constant_gain_draws_the_fit_without_a_numpy_warning():
    mech = pd.DataFrame(
        {
            "method": ["grpo_d"] * 3,
            "kl_same": [0.1, 0.2, 0.3],
            "same_task_gain": [1.0, 2.0, 3.0],
            "cross_task_change": [0.0, 0.0, 0.0],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.kl_vs_transfer(mech)
    labels = [line.get_label() for ax in fig.axes for line in ax.lines if line.get_label().startswith("fit")]
    assert labels == ["fit (r = 1.00)", "fit (r = undefined)"]


def test_kl_to_base_is_zero_at_init_and_grows_with_the_adapter():
    from othinklab.models import load_model
    from othinklab.tasks import make_task
    from othinklab.tiny import ensure_untrained

    model, processor = load_model(str(ensure_untrained()), lora=True, lora_r=4)
    samples = make_task("counting").samples(3, split="ood", seed=1)
    zero = ablations.kl_to_base(model, processor, samples, num_samples=2, max_new_tokens=12)
    assert zero["kl_tokens"] > 0 and zero["kl_k3"] == 0.0 and zero["kl_k1"] == 0.0  # LoRA B starts at 0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.train()
    moved = ablations.kl_to_base(model, processor, samples, num_samples=2, max_new_tokens=12)
    assert moved["kl_k3"] > 1e-4 and math.isfinite(moved["kl_k1"])
    assert model.training is True  # the caller's mode is restored
    with pytest.raises(ValueError, match="base_model"):
        ablations.kl_to_base(torch.nn.Linear(2, 2), processor, samples)


@pytest.mark.slow
def test_ablate_smoke_writes_claims_with_intervals_and_the_mechanism(tmp_path, base_dir):
    paths = ablations.run_ablation("ablate-smoke", tmp_path)
    claims = pd.read_csv(paths["claims"])
    assert set(claims["better"]) == {"dr_grpo", "clip_higher"} and set(claims["worse"]) == {"grpo_d"}
    assert set(claims["eval_task"]) == {"counting:ood", "geometry:test"}
    assert (claims["lo"] <= claims["diff"]).all() and (claims["diff"] <= claims["hi"]).all()
    assert claims["verdict"].isin(["holds", "reversed", "not separable"]).all()
    mech = pd.read_csv(paths["mechanism"])
    assert set(mech["method"]) == {"grpo_d", "dr_grpo", "clip_higher"}
    assert (mech["kl_same"] >= 0).all() and mech["same_task_gain"].notna().all()
    assert paths["mechanism_figure"].stat().st_size > 0
    metrics = pd.read_json(
        tmp_path / "ablate-smoke" / "runs" / "clip_higher-counting-seed0" / "metrics.jsonl", lines=True
    )
    assert {"policy/entropy", "clip/low_fraction", "clip/high_fraction"} <= set(metrics.columns)


def _fake_study(root, names=("ablate-explore", "ablate-schedule")):
    """Constructed study files: known claims, a mechanism table where KL predicts losing the other task."""
    import json

    for i, name in enumerate(names):
        d = root / name
        d.mkdir(parents=True)
        rows = []
        for ev, diff, lo, hi, verdict in (
            ("counting:ood", 4.0 + i, 1.0, 7.0, "holds"),
            ("geometry:test", -1.0, -5.0, 3.0, "not separable"),
        ):
            for metric in ("greedy", "sampled"):
                rows.append({"claim": f"v{i} vs grpo_d", "metric": metric, "better": f"v{i}", "worse": "grpo_d",
                             "train_task": "counting", "eval_task": ev, "diff": diff, "lo": lo, "hi": hi, "verdict": verdict})  # fmt: skip
        pd.DataFrame(rows).to_csv(d / "claims.csv", index=False)
        kl = [0.01, 0.02, 0.03, 0.04]
        pd.DataFrame({"method": f"v{i}", "train_task": "counting", "seed": range(4), "kl_same": kl, "kl_cross": kl[::-1],
                      "same_task_gain": [10, 12, 11, 13], "cross_task_change": [-1, -2, -3, -4]}).to_csv(d / "mechanism.csv", index=False)  # fmt: skip
        prov = {"commit": "abcdef1234", "wall_seconds": 600, "machine": {"cpu_count": 2}, "sizes": {"seeds": [0, 1, 2], "steps": 30, "num_eval": 100}}  # fmt: skip
        (d / "provenance.json").write_text(json.dumps(prov))


def test_block_is_generated_from_the_study_files(tmp_path):
    _fake_study(tmp_path)
    mr = _make_reports()
    block = mr.ablation_block(tmp_path)
    assert block.startswith(mr.ABLATION_MARKERS[0]) and block.endswith(mr.ABLATION_MARKERS[1])
    assert "| ablate-explore | v0 | grpo_d | +4.0 [+1.0, +7.0] | holds | -1.0 [-5.0, +3.0] | not separable |" in block
    assert "| ablate-schedule | v1 | grpo_d | +5.0 [+1.0, +7.0] | holds |" in block
    assert "Of 4 greedy comparisons: 2 holds, 0 reversed, 0 borderline, 2 not separable" in block
    assert "Of 4 sampled comparisons: 2 holds" in block and "pass@8" not in block  # only metrics the files hold
    # RL's Razor both ways: KL on the trained task's prompts predicts forgetting here, on the other task's the reverse
    assert "forgetting vs KL on the trained task's prompts (RL's Razor): r = -1.00" in block
    assert "forgetting vs KL on the other task's prompts: r = +1.00" in block
    assert "about 0.1 `reversed` (at most 1 in 95% of studies)" in block
    assert "commit abcdef1" in block and "20 min" in block and "3 seeds x 30 steps" in block


def test_kl_correlation_interval_and_verdict():
    m = pd.DataFrame({"kl_same": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], "cross_task_change": [0, -1, -2, -3, -4, -5]})
    c = ablations.kl_correlation(m)
    assert c["r"] == -1.0 and c["verdict"] == "negative" and c["n_runs"] == 6
    noise = pd.DataFrame({"kl_same": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], "cross_task_change": [1, -1, 1, -1, 1, -1]})
    assert ablations.kl_correlation(noise)["verdict"] == "not separable"
    assert math.isnan(ablations.kl_correlation(m.head(2))["r"])
