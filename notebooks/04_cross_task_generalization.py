# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Cross-task generalization: SFT vs RL, same task and the other task
#
# **What this teaches:** the paper's protocol for its central claim — post-train on one task (counting or
# geometry) with SFT, GRPO (constant beta) or GRPO-D, then evaluate on *both* tasks: the trained one
# (Table 1) and the other one (cross-task). The grid's results are read as tables (same-task, cross-task,
# change against the base) and plots (bars and a heatmap), with the paper's reported numbers beside them.
#
# **Time:** about 20 s on a 2-core laptop CPU: it runs `othinklab grid --preset smoke` (2 training steps per
# cell, 16 eval prompts) — the *plumbing* of the protocol, whose numbers are noise. Set `RESULTS_CSV` to the
# `results.csv` of `othinklab grid --preset tiny` (42 min on 2 cores, 3 seeds, 200 prompts) for numbers that
# mean something. **On a GPU:** the grid runs on the synthetic tasks only; for the real Table 1, train the
# `configs/qwen2vl_2b_*` runs and collect their `othinklab eval` results in the same columns.

# %%
# Parameters
PRESET = "smoke"        # "tiny" for the README's numbers (about 42 minutes on 2 CPU cores)
RESULTS_CSV = None      # or the path of a finished grid's results.csv, e.g. "grid_runs/tiny/results.csv"

# %%
import tempfile

import pandas as pd

from othinklab import plots
from othinklab.evaluate import cross_task_matrix
from othinklab.grid import PRESETS, run_grid

if RESULTS_CSV is None:
    paths = run_grid(PRESET, tempfile.mkdtemp())
    results = pd.read_csv(paths["results"])
else:
    paths, results = None, pd.read_csv(RESULTS_CSV)
paper = plots.paper_results()
results.head()

# %% [markdown]
# One row per (method, train task, seed, eval task): greedy accuracy (the paper's metric), sampled accuracy
# (several samples per prompt at T = 1: what the policy actually does), format rate and `n` eval prompts.
# The base is trained on nothing, so it is listed under both train tasks with the same numbers.

# %% [markdown]
# ## Same task (Table 1's layout) and cross task

# %%
greedy = cross_task_matrix(results) * 100
same_task = pd.DataFrame({
    "VC (counting -> counting:ood)": greedy.xs("counting")["counting:ood"],
    "GR (geometry -> geometry:test)": greedy.xs("geometry")["geometry:test"],
}).reindex(["base", "sft", "grpo", "grpo_d"])
same_task.round(1)

# %%
greedy.round(1)   # rows: what it was trained on; columns: what it was tested on

# %% [markdown]
# ## SFT vs RL: what post-training on one task does to the other
# The change against the base, in accuracy points: the diagonal cells are the trained task; the
# off-diagonal ones are the paper's cross-task question (the paper: RL keeps or improves the other task,
# SFT loses it).

# %%
base = greedy.xs("base", level="method")
delta = greedy.sub(base, level="train_task").round(1)
delta

# %%
sampled = cross_task_matrix(results, "sampled_accuracy") * 100
sampled.round(1)   # sampled accuracy: less noisy than greedy on small eval sets

# %% [markdown]
# ## The same as plots, with the paper's Qwen2-VL-2B numbers as reference

# %%
bars = plots.cross_task_bars(results, paper=paper)

# %%
heat = plots.cross_task_heatmap(results, paper=paper)

# %%
paper[paper.model == "Qwen2-VL-2B-Instruct"].pivot_table(index=["train_task", "method"], columns="eval_task", values="accuracy")

# %% [markdown]
# Read the smoke preset's numbers as a check that the protocol runs, not as evidence: 2 training steps and 16
# eval prompts move accuracy by less than the eval noise. The README reports the `tiny` preset (3 seeds,
# 200 prompts, Wilson intervals) and says which of the paper's claims it does and does not reproduce.

# %% [markdown]
# ## Checks (these can fail)

# %%
methods = {"base", "sft", "grpo", "grpo_d"}
assert set(results["method"]) == methods
assert set(results["train_task"]) == {"counting", "geometry"} and set(results["eval_task"]) == {"counting:ood", "geometry:test"}
assert greedy.shape == (8, 2) and not greedy.isna().any().any()
assert results["greedy_accuracy"].between(0, 1).all() and results["sampled_accuracy"].between(0, 1).all()
if RESULTS_CSV is None:
    assert (results["n"] == PRESETS[PRESET].num_eval).all()
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert all(m in paths["same_task"].read_text() for m in methods)
# the base is one model: same numbers under both train tasks, and zero change against itself
assert (greedy.xs("base", level="method").loc["counting"] == greedy.xs("base", level="method").loc["geometry"]).all()
assert (delta.xs("base", level="method") == 0).all().all()
# the plots carry our numbers and the paper's
assert 76.5 in list(bars.axes[0].collections[0].get_offsets()[:, 1])        # paper: GRPO-D on counting
texts = [t.get_text() for t in heat.axes[1].texts]
assert "76.5" in texts and "69.5" in texts and len(heat.axes) == 2           # 69.5: GRPO-D geometry -> counting
assert f"{greedy.iloc[0, 0]:.1f}" in [t.get_text() for t in heat.axes[0].texts]
print("all checks passed")

# %% [markdown]
# ## Try this
# 1. Run `othinklab grid --preset tiny` (or set `RESULTS_CSV` to its results) and redo the delta table: on
#    which cross-task direction does RL beat SFT at this scale, and do the confidence intervals in
#    `cross_task.md` overlap?
# 2. Compare greedy and sampled accuracy per cell: where do they disagree, and which would you trust with
#    16 eval prompts?
# 3. The paper's cross-task 2B numbers are derived from its stated relative gains (see the CSV's source
#    line). Which cells of the heatmap does the paper leave blank, and what experiment would fill them?
