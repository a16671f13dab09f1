"""Grid plumbing without training: shared streams, presets' cost, claims from constructed caches, and the
generated documentation blocks (`scripts/make_reports.py`) against the shipped files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from othinklab.grid import PAPER_METHODS, PRESETS, Method, Preset, cell_config, cell_key, cells, estimate_seconds
from othinklab.grid_report import (
    SHIPPED_DIR,
    Claim,
    compute_claims,
    load_cells,
    load_shipped_results,
    paper_claims,
    side_matrix,
    write_reports,
)
from othinklab.runs import PromptStream
from othinklab.stats import mean_interval

ROOT = Path(__file__).resolve().parent.parent


def _make_reports():
    """scripts/make_reports.py, the maintainer script (not part of the package)."""
    spec = importlib.util.spec_from_file_location("make_reports", ROOT / "scripts" / "make_reports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset", ["smoke", "tiny", "powered"])
def test_methods_of_a_seed_share_the_training_stream(preset, tmp_path):
    p = PRESETS[preset]
    for seed in p.seeds[:2]:
        for task in p.train_tasks:
            cfgs = [cell_config(p, m, task, seed, tmp_path) for m in p.methods if m.trainer != "none"]
            assert len({(c.task, c.train.seed, c.grpo.prompts_per_step, c.sft.batch_size) for c in cfgs}) == 1
            ids = {
                tuple(s.id for i in range(3) for s in PromptStream(c, per_batch=c.grpo.prompts_per_step).batch(i))
                for c in cfgs
            }
            assert len(ids) == 1  # GRPO, GRPO-D and SFT draw the very same prompts


def test_untrained_methods_are_one_cell_whatever_the_seed(tmp_path):
    p = PRESETS["tiny"]
    listed = cells(p)
    assert sum(m.trainer == "none" for m, _, _ in listed) == 2  # base under two prompts, once each
    assert len(listed) == 2 + 3 * len(p.seeds) * len(p.train_tasks)
    base = PAPER_METHODS[0]
    keys = {cell_key(p, base, cell_config(p, base, t, s, tmp_path)) for t in p.train_tasks for s in p.seeds}
    assert len(keys) == 1


def test_presets_fit_their_time_budgets():
    assert estimate_seconds(PRESETS["tiny"]) <= 20 * 60
    assert estimate_seconds(PRESETS["powered"]) <= 60 * 60 and len(PRESETS["powered"].seeds) >= 5
    assert estimate_seconds(PRESETS["smoke"]) < 60


def _fake_grid(out: Path, shift: float = 0.1, seeds=(0, 1, 2), n: int = 40) -> None:
    """A grid cache as `run_grid` writes it: grpo_d beats grpo by `shift` on every prompt of every seed."""
    rng = np.random.default_rng(0)
    cache = out / "cache"
    cache.mkdir(parents=True)
    evals = ("counting:ood", "geometry:test")
    base_acc = {e: (rng.random(n) < 0.4).astype(float) for e in evals}

    def cell(method, task, seed, acc):
        rows, per = [], {}
        for e in evals:
            g = acc[e]
            rows.append(
                {"method": method, "train_task": task, "seed": seed, "eval_task": e, "prompt": "think", "n": n,
                 "greedy_accuracy": g.mean(), "greedy_lo": 0.0, "greedy_hi": 1.0, "sampled_accuracy": g.mean(),
                 "sampled_lo": 0.0, "sampled_hi": 1.0, "sampled_format": 1.0, "sampled_reward": 1.0,
                 "train_seconds": 1.0, "eval_seconds": 1.0, "run_dir": ""}
            )  # fmt: skip
            per[e] = {"ids": [f"{e}:{i}" for i in range(n)], "greedy": list(g), "sampled": list(g)}
        name = f"{method}-{task}-{seed}"
        (cache / f"{name}.json").write_text(json.dumps({"rows": rows, "per_prompt": per}))

    cell("base", "none", seeds[0], base_acc)
    cell("base_direct", "none", seeds[0], {e: 1 - a for e, a in base_acc.items()})
    for seed in seeds:
        for task in ("counting", "geometry"):
            grpo = {e: np.clip(a * 0 + 0.5, 0, 1) for e, a in base_acc.items()}
            cell("grpo", task, seed, grpo)
            cell("grpo_d", task, seed, {e: a + shift for e, a in grpo.items()})
            cell("sft", task, seed, grpo)


def test_claims_from_a_constructed_grid(tmp_path):
    _fake_grid(tmp_path)
    paths = write_reports(tmp_path, paper_claims(), preset="constructed")
    claims = pd.read_csv(paths["claims"])
    c = claims[(claims.better == "grpo_d") & (claims.worse == "grpo") & (claims.metric == "greedy")]
    assert len(c) == 2 and (c["verdict"] == "holds").all()
    assert np.allclose(c[["diff", "lo", "hi"]].to_numpy(), 10.0)
    # grpo and sft are identical here: their cross-task difference is exactly 0, not separable
    same = claims[(claims.better == "grpo") & (claims.worse == "sft")]
    assert (same["verdict"] == "not separable").all() and np.allclose(same[["lo", "hi"]].to_numpy(), 0.0)
    # the paper's numbers sit beside ours for greedy accuracy (Table 1: GRPO-D 76.5 vs GRPO 64.5 on counting)
    row = c[c.train_task == "counting"].iloc[0]
    assert (row.paper_better, row.paper_worse) == (76.5, 64.5)
    assert "holds" in paths["claims_md"].read_text() and "| GRPO-D > GRPO, same task (counting) |" in (
        paths["claims_md"].read_text()
    )
    results = pd.read_csv(paths["results"])
    assert set(results.method) == {"base", "base_direct", "sft", "grpo", "grpo_d"}
    assert len(results[results.method == "base"]) == 4  # one model, listed under both train tasks
    spread = pd.read_csv(paths["seed_spread"])
    assert (spread["n_seeds"] == 3).all() and np.allclose(spread["sd"], 0.0)


def test_claims_refuse_unpaired_prompts(tmp_path):
    _fake_grid(tmp_path)
    _, per = load_cells(tmp_path)
    per.loc[(per.method == "grpo") & (per.id == "counting:ood:0"), "id"] = "counting:ood:other"
    with pytest.raises(ValueError, match="same eval prompts"):
        compute_claims(per, (Claim("grpo_d", "grpo", "counting", "counting:ood"),))


def test_variant_presets_declare_their_own_methods_and_claims(tmp_path):
    variant = Method("grpo_d_w05", "grpo", overrides=("kl.explore_frac=0.5",), per_task=PAPER_METHODS[4].per_task)
    p = Preset(
        seeds=(0,), steps=2, prompts_per_step=2, num_generations=2, max_completion_length=8, num_eval=4,
        eval_samples=1, methods=(PAPER_METHODS[0], PAPER_METHODS[4], variant), train_tasks=("counting",),
        claims=(Claim("grpo_d_w05", "grpo_d", "counting", "counting:ood"),),
    )  # fmt: skip
    assert [m.name for m, _, _ in cells(p)] == ["base", "grpo_d", "grpo_d_w05"]
    cfg = cell_config(p, variant, "counting", 0, tmp_path)
    assert cfg.kl.explore_frac == 0.5 and cfg.kl.beta_max == 0.1 and p.all_claims()[0].better == "grpo_d_w05"


def test_shipped_results_and_generated_block(tmp_path):
    _fake_grid(tmp_path)
    write_reports(tmp_path, paper_claims())
    with pytest.raises(FileNotFoundError, match="provenance.json"):
        load_shipped_results(tmp_path)
    (tmp_path / "provenance.json").write_text(json.dumps({"commit": "abc1234def", "command": "x", "wall_seconds": 60}))
    shipped = load_shipped_results(tmp_path)
    assert len(shipped["claims"]) and "| grpo_d |" in shipped["same_task"]
    mr = _make_reports()
    block = mr.grid_block(tmp_path)
    assert block.startswith(mr.GRID_MARKERS[0]) and block.endswith(mr.GRID_MARKERS[1]) and "commit abc1234" in block
    assert "**GRPO-D vs GRPO, the paper's headline, on both primary metrics**" in block
    assert "counting: greedy +10.0 [+10.0, +10.0] holds" in block and "sampled +10.0 [+10.0, +10.0] holds" in block
    text = f"intro\n{mr.GRID_MARKERS[0]}\nstale\n{mr.GRID_MARKERS[1]}\nrest\n"
    assert mr.replace_block(text, mr.GRID_MARKERS, block) == f"intro\n{block}\nrest\n"
    assert mr.replace_block("no markers", mr.GRID_MARKERS, block) is None
    assert mr.chance_verdicts(44) == (1.1, 3) and mr.chance_verdicts(1)[1] == 0  # 2.5% reversed each, by chance


def test_table_intervals_count_seeds_as_the_claims_do(tmp_path):
    """A cell's interval is the claims' seed-and-prompt interval of its per-prompt matrix, not a pooled
    binomial one: seeds that disagree widen it."""
    _fake_grid(tmp_path)
    write_reports(tmp_path, paper_claims())
    (tmp_path / "provenance.json").write_text("{}")
    per = pd.read_csv(tmp_path / "per_prompt.csv")
    per.loc[(per.method == "grpo") & (per.seed == 1), "greedy"] = 1.0  # one seed far above the others
    per.to_csv(tmp_path / "per_prompt.csv", index=False)
    same = load_shipped_results(tmp_path)["same_task"]
    m = side_matrix(per, "grpo", "counting", "counting:ood", "greedy")
    mean, lo, hi = mean_interval(100.0 * m.to_numpy())
    assert len(m) == 3 and f"[{max(lo, 0):.1f}, {min(hi, 100):.1f}]" in same and hi - lo > 40


def test_docs_blocks_match_the_shipped_results():
    """docs/results.md's generated blocks are what scripts/make_reports.py makes from the shipped files."""
    if not (SHIPPED_DIR / "claims.csv").exists():
        pytest.skip("no shipped grid results in data/results/ yet")
    mr = _make_reports()
    docs = (ROOT / "docs" / "results.md").read_text()
    assert mr.grid_block() in docs and mr.ablation_block() in docs
    readme = (ROOT / "README.md").read_text()  # the README's demo and KL-lab tables, where it has them
    for markers, block in ((mr.DEMO_MARKERS, mr.demo_block), (mr.KL_LAB_MARKERS, mr.kl_lab_block)):
        if markers[0] in readme:
            assert block() in readme, f"README's {markers[0]} block is stale: run scripts/make_reports.py --readme"


@pytest.mark.slow
def test_shipped_claims_are_current():
    """The shipped claims and tables are what the current statistics make of the shipped per-prompt files."""
    if not (SHIPPED_DIR / "per_prompt.csv").exists():
        pytest.skip("no shipped grid results in data/results/ yet")
    assert _make_reports().main(["--check"]) == 0


def test_an_untrained_side_is_known_by_its_kind_not_its_row_count(tmp_path):
    """A trained method with one seed pairs seed by seed with another trained one (not broadcast), and an
    untrained method is one model."""
    _fake_grid(tmp_path, seeds=(0, 1, 2))
    _, per = load_cells(tmp_path)
    one_seed = per[~((per.method == "grpo_d") & (per.seed != 1))]
    c = compute_claims(one_seed, (Claim("grpo_d", "grpo", "counting", "counting:ood"),))
    assert (c["n_seeds"] == 1).all()
    twice = pd.concat([per, per[per.method == "base"].assign(seed=7)])
    with pytest.raises(ValueError, match="one model"):
        compute_claims(twice, (Claim("grpo_d", "base", "counting", "counting:ood"),))


def test_claims_figure_draws_every_claim(tmp_path):
    from othinklab.grid_report import claims_figure

    _fake_grid(tmp_path)
    claims = pd.read_csv(write_reports(tmp_path, paper_claims())["claims"])
    fig = claims_figure(claims, "greedy")
    assert len(fig.axes[0].get_yticklabels()) == (claims["metric"] == "greedy").sum()


def test_verdict_summary_lists_each_claim_under_its_verdict_and_the_power_line():
    verdict_summary = _make_reports().verdict_summary
    rows = [
        {"claim": "GRPO-D > GRPO, same task (counting)", "metric": "greedy", "better": "grpo_d", "worse": "grpo",
         "train_task": "counting", "diff": 1.0, "lo": -9.0, "hi": 11.0, "verdict": "not separable", "n_seeds": 5,
         "seeds_for_5pts": 20},
        {"claim": "sft > base, same task (counting)", "metric": "greedy", "better": "sft", "worse": "base",
         "train_task": "counting", "diff": 30.0, "lo": 20.0, "hi": 40.0, "verdict": "holds", "n_seeds": 5,
         "seeds_for_5pts": None},
    ]  # fmt: skip
    text = verdict_summary(pd.DataFrame(rows))
    assert "*holds* (1): sft > base, same task (counting) +30.0 [+20.0, +40.0]" in text
    assert "*reversed* (0): none" in text and "*not separable* (1): GRPO-D > GRPO" in text
    assert "Sampled" not in text  # no sampled rows, no sampled paragraph
    power = _make_reports().headline(pd.DataFrame(rows))
    assert "counting: greedy +1.0 [-9.0, +11.0] not separable, ±10.0 with 5 seeds, 20 seeds for ±5" in power
