# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Cross-task generalization: SFT vs RL, same task and the other task — solutions
#
# *The solved copy of `notebooks/04_cross_task_generalization.py`: the same cells, with every exercise answered (each
# check prints ✓). Try the exercises there first.*
#
# **What this teaches:** the paper's protocol for its central claim — post-train on one task (counting or
# geometry) with SFT, GRPO (constant beta) or GRPO-D, then evaluate on *both* tasks: the trained one
# (Table 1) and the other one (cross-task) — and how to read such a grid honestly: each claim ("GRPO-D beats
# SFT on the other task") as a *paired* difference (same seeds, same eval prompts) with a 95% interval and a
# verdict read off the interval only, the seed-to-seed spread, how many seeds a ±5-point answer would need,
# and what the `<think>` format itself costs the base model (`base_direct`: the base under the answer-only
# prompt).
#
# **Time:** measured: 12 s run in JupyterLab (7 s in nbclient) with the shipped powered run in `data/results/` (it
# only reads files), on the shared 2-core machine this was written on. Without the shipped run in `data/results/`, the notebook runs `othinklab grid --preset
# smoke` itself (about 2 minutes on 2 busy CPU cores): the *plumbing* of the protocol, 1 seed, 2 training steps,
# 16 eval prompts — **its numbers are noise**, and the notebook says so in its output. **On a GPU:** nothing
# changes here (the grid runs on the synthetic tasks and the tiny model); for the real Table 1, train the
# `configs/qwen2vl_2b_*` runs and collect their
# `othinklab eval` results in the same columns.

# %%
# Setup: does nothing where othinklab is importable (the project's venv). In a fresh kernel or on Colab it
# installs the package first: from the checkout this notebook sits in, else from $OTHINKLAB_SOURCE (a pip spec:
# a path or a git URL of your clone; on Colab clone the repository first and open the notebook from it).
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("othinklab") is None:
    _repo = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "othinklab" / "__init__.py").is_file()), None)
    _pip = [sys.executable, "-m", "pip", "install", "-q"]
    if "google.colab" in sys.modules:
        subprocess.check_call([*_pip, "torch"])  # Colab's CUDA torch: kept if present, never a CPU wheel over it
    _source = str(_repo) if _repo else os.environ.get("OTHINKLAB_SOURCE")
    if not _source:
        raise RuntimeError("othinklab is not installed: clone the repository and open this notebook from the clone, or set OTHINKLAB_SOURCE to a pip spec (a path or a git URL) and rerun this cell")
    subprocess.check_call([*_pip, _source])
    importlib.invalidate_caches()

# %%
# Parameters
RESULTS_DIR = None         # None: the shipped run in data/results/; or a grid's output, e.g. "grid_runs/powered"
FALLBACK_PRESET = "smoke"  # run when no results are found (smoke: plumbing only, numbers are noise)

# %%
import tempfile

from IPython.display import Markdown, display

from othinklab import plots
from othinklab.evaluate import cross_task_matrix
from othinklab.exercises import check, progress
from othinklab.grid import METHODS, PRESETS, run_grid
from othinklab.grid_report import SHIPPED_DIR, claims_figure, claims_markdown, load_shipped_results, spread_table

try:
    shipped = load_shipped_results(RESULTS_DIR)
    paths, PLUMBING = None, False
    print(f"Reading the finished grid in {RESULTS_DIR or SHIPPED_DIR}")
except FileNotFoundError as missing:
    print(f"{missing}\n-> running `othinklab grid --preset {FALLBACK_PRESET}` here instead.")
    paths = run_grid(FALLBACK_PRESET, tempfile.mkdtemp())
    shipped = load_shipped_results(paths["results"].parent)  # the grid's output has the same files
    PLUMBING = FALLBACK_PRESET == "smoke"
    if PLUMBING:
        print("\n*** PLUMBING NUMBERS: 1 seed, 2 training steps, 16 eval prompts. They show the protocol runs; "
              "they are noise, not evidence for or against any claim. ***")
results, claims, prov = shipped["results"], shipped["claims"], shipped["provenance"]
paper = plots.paper_results()
UNTRAINED = {"base", "base_direct"}
results.head()

# %% [markdown]
# ## Where these numbers come from
# Every grid writes a provenance record next to its results: the commit it ran from (and whether the tree had
# uncommitted edits), the exact command, wall seconds, the machine and library versions. A number without
# these cannot be checked or rerun.

# %%
print(f"commit       {prov.get('commit')} (uncommitted edits: {prov.get('dirty')})")
print(f"command      {prov.get('command')}")
print(f"wall time    {prov.get('wall_seconds', float('nan')) / 60:.1f} min on {prov.get('machine', {}).get('cpu_count', '?')} CPU cores")
print(f"preset       {prov.get('preset')}: {prov.get('sizes', {}).get('description', '')}")
print("versions     " + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()))

# %% [markdown]
# `results` has one row per (method, train task, seed, eval task): greedy accuracy (the paper's metric),
# sampled accuracy (several samples per prompt at T = 1: what the policy actually does), format rate and `n`
# eval prompts. The untrained models (`base`, `base_direct`) are trained on nothing, so they are listed under
# both train tasks with the same numbers.
#
# ## Same task (Table 1's layout) and cross task
# Each cell: mean greedy accuracy over seeds (seed range) [95% interval over seeds and prompts, as the claims'].

# %%
if PLUMBING:
    display(Markdown("**Smoke preset: plumbing numbers, noise.**"))
display(Markdown(shipped["same_task"]))

# %%
display(Markdown(shipped["cross_task"]))

# %%
greedy = cross_task_matrix(results) * 100
greedy.round(1)   # rows: what it was trained on; columns: what it was tested on

# %% [markdown]
# ## SFT vs RL: what post-training on one task does to the other
# The change against the base, in accuracy points: the trained task's column is the same-task gain; the other
# column is the paper's cross-task question (the paper: RL keeps or improves the other task, SFT loses it).
# `base_direct` row: what dropping the `<think>` format does to the untrained model.

# %%
base = greedy.xs("base", level="method")
delta = greedy.sub(base, level="train_task").round(1)
delta

# %%
sampled = cross_task_matrix(results, "sampled_accuracy") * 100
sampled.round(1)   # sampled accuracy: several samples per prompt, less noisy than greedy

# %% [markdown]
# ## The claims, each as a paired difference with a 95% interval
# A difference of two means hides how much of it is seed luck and how much is prompt luck. Each claim below
# compares the two methods on the *same* seeds and the *same* eval prompts; the interval counts seeds (Student's
# t) and prompts as random; the verdict is read off the interval only: **holds** (interval above 0), **reversed**
# (below 0), **borderline** (an end within 0.2 points of 0), **not separable** (straddles 0). The paper's 2B numbers are beside ours (greedy only: the paper
# reports no sampled accuracy).

# %%
display(Markdown(claims_markdown(claims, "**Smoke preset: plumbing numbers, noise.**\n" if PLUMBING else "")))

# %%
fig_greedy = claims_figure(claims, "greedy")   # green: holds, red: reversed, grey: not separable; x: the paper

# %%
fig_sampled = claims_figure(claims, "sampled")

# %%
claims.groupby("metric")["verdict"].value_counts().unstack(fill_value=0)

# %% [markdown]
# ## The same as plots, with the paper's Qwen2-VL-2B numbers as reference

# %%
bars = plots.cross_task_bars(results, paper=paper)   # black bars: the paper's 2B numbers

# %%
heat = plots.cross_task_heatmap(results, paper=paper)

# %% [markdown]
# ## Seed spread and power: how many seeds would settle a claim?
# The trained cells' seed-to-seed spread (points; `sd` is NaN with one seed). `halfwidth` is the 95%
# interval's half-width the claim's variance components predict; `seeds_for_5pts` is how many seeds (same
# prompts) would shrink it to ±5 points — a claim that is "not separable" with a large number there is
# unanswered, not refuted.

# %%
spread = spread_table(results[~results["method"].isin(UNTRAINED)])
spread.pivot_table(index=["train_task", "method"], columns=["metric", "eval_task"], values="sd").round(1)

# %%
claims[claims.metric == "greedy"][["claim", "n_seeds", "n_prompts", "diff", "halfwidth", "seeds_for_5pts"]]

# %% [markdown]
# ## The prompt's cost: `base_direct` vs `base`
# `base` answers after a `<think>` block; `base_direct` is the same weights asked for the answer only. Their
# paired difference says how much of the base's score is the format, before any post-training.

# %%
cost = claims[claims.better == "base_direct"][["claim", "metric", "ours_better", "ours_worse", "diff", "lo", "hi", "verdict"]]
cost

# %% [markdown]
# Read smoke numbers as a check that the protocol runs, not as evidence: 2 training steps and 16 eval prompts
# move accuracy by less than the eval noise, and with one seed there is no seed spread to estimate. The
# shipped powered run (5 seeds, 200 prompts per task) is what the README's table and claims come from.

# %% [markdown]
# ## Checks (these can fail)
# The detailed checks of these tables and figures are tests (`tests/test_notebooks.py`); here, that every
# verdict agrees with its interval.

# %%
assert all(((v == "holds") == (lo > 0) or abs(lo) <= 0.2) and ((v == "reversed") == (hi < 0) or abs(hi) <= 0.2) for v, lo, hi in claims[["verdict", "lo", "hi"]].itertuples(index=False))
print("all checks passed")

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell: ✓ is right, ✗ comes with a hint, "not yet" means no
# answer yet. Solutions: `notebooks/solutions/04_cross_task_generalization.py`.
#
# **1. Read the verdicts.** How many of the *greedy* claims are "not separable"? What would it take to
# separate one of them?

# %%
answer = ((claims["metric"] == "greedy") & (claims["verdict"] == "not separable")).sum()
check("04.not_separable", answer, claims=claims)

# %% [markdown]
# **2. The cross-task question.** Trained on geometry with GRPO-D, how many accuracy points did the model
# gain (or lose, negative) on counting against the base? Read it off the `delta` table.

# %%
answer = delta.loc[("geometry", "grpo_d"), "counting:ood"]
check("04.cross_change", answer, delta=delta)

# %% [markdown]
# **3. Power.** Which greedy claim needs the most seeds for a ±5-point interval (its `claim` text)?

# %%
g = claims[claims["metric"] == "greedy"]
answer = g.loc[g["seeds_for_5pts"].idxmax(), "claim"]
print(answer, "needs", g["seeds_for_5pts"].max(), "seeds")
check("04.most_seeds", answer, claims=claims)

# %%
print(progress("04."))
