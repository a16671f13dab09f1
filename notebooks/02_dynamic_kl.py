# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Dynamic KL: GRPO-D's beta schedule against a constant beta
#
# **What this teaches:** the one change OThink-MR1 makes to GRPO — a KL weight beta(s) that is *lower early*
# (explore) and *higher late* (exploit), Eq. 3 — next to the other schedules in `othinklab.kl`; then two short
# runs on the tiny base, constant beta vs GRPO-D, and how the measured KL follows the weight.
#
# **Time:** measured: 3.5 min run in JupyterLab (two 30-step runs; 8.4 min in nbclient while other jobs loaded it
# to ~12) on the shared 2-core machine this was written on; less on an idle machine. **On a GPU:** set `MODEL` to
# `Qwen/Qwen2-VL-2B-Instruct` with `LOAD_IN_4BIT = True` and raise `STEPS`; the rest is unchanged.

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
MODEL = "tiny"
LOAD_IN_4BIT = False
TASK = "counting"
STEPS = 30
SEED = 0

# %%
import tempfile
import matplotlib.pyplot as plt
from othinklab import kl, plots
from othinklab.config import load_config
from othinklab.exercises import check, progress
from othinklab.metrics import read_metrics
from othinklab.trainer import train

T = 100
schedules = {
    "GRPO-D counting (0.04 -> 0.1)": kl.make_schedule("grpo_d", total_steps=T, beta_min=0.04, beta_max=0.1),
    "GRPO-D geometry (0.0 -> 0.02)": kl.make_schedule("grpo_d", total_steps=T, beta_min=0.0, beta_max=0.02),
    "constant 0.04": kl.make_schedule("constant", beta=0.04),
    "linear 0.0 -> 0.1": kl.make_schedule("linear", beta_start=0.0, beta_end=0.1, total_steps=T),
    "cosine 0.1 -> 0.0": kl.make_schedule("cosine", beta_start=0.1, beta_end=0.0, total_steps=T),
}
plots.beta_schedules(schedules, T);

# %% [markdown]
# The geometry setting reaches beta = 0 at s = w = 30, yet `needs_reference` stays true: the KL term comes
# back afterwards, so the reference model must be kept for the whole run.

# %%
for name, s in schedules.items():
    print(f"{name:32s} beta(0)={s(0):.4f} beta(30)={s(30):.4f} beta(100)={s(100):.4f} needs_reference={kl.needs_reference(s)}")

# %% [markdown]
# ## Two short runs: constant beta vs GRPO-D
# Same base, same prompts (same seed), same learning rate; only the schedule differs.

# %%
out = tempfile.mkdtemp()
common = [f"model.name={MODEL}", f"model.load_in_4bit={LOAD_IN_4BIT}", f"task.name={TASK}", f"train.total_steps={STEPS}",
          "train.learning_rate=1e-3", "grpo.prompts_per_step=4", f"train.seed={SEED}", f"train.output_dir={out}", "train.save_every=0"]
runs = {}
for name, extra in {"constant": ["kl.schedule=constant", "kl.beta=0.04"],
                    "grpo_d": ["kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1"]}.items():
    res = train(load_config(None, common + extra + [f"train.run_name={name}"]), progress=False)
    runs[name] = read_metrics(res.run_dir)
runs["grpo_d"][["step", "kl/beta", "kl/value", "reward/total", "reward/format"]].tail()

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, m in runs.items():
    axes[0].plot(m["step"], m["reward/total"].rolling(5, min_periods=1).mean(), label=name)
    axes[1].plot(m["step"], m["kl/value"].rolling(5, min_periods=1).mean(), label=f"{name}: measured KL")
    axes[1].plot(m["step"], m["kl/beta"], linestyle="--", label=f"{name}: beta(s)")
axes[0].set_title("reward (rolling mean of 5)"); axes[1].set_title("KL and beta"); axes[0].legend(); axes[1].legend()
fig.tight_layout()

# %% [markdown]
# ## Checks (these can fail)

# %%
g = runs["grpo_d"]
assert abs(g["kl/beta"].iloc[0] - 0.07) < 1e-9 and abs(g["kl/beta"].min() - 0.04) < 1e-9  # starts at beta_mid, dips to beta_min
assert g["kl/beta"].idxmin() == round(0.3 * STEPS)
assert (runs["constant"]["kl/beta"] == 0.04).all()
assert (g["kl/value"] >= 0).all() and g["kl/value"].iloc[-1] > 0  # the policy moved away from the reference
assert len(g) == len(runs["constant"]) == STEPS
print("all checks passed")

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell: ✓ is right, ✗ comes with a hint, "not yet" means no
# answer yet. Solutions: `notebooks/solutions/02_dynamic_kl.py`.
#
# **1. Where is the dip?** For a 200-step GRPO-D run (beta 0.04 -> 0.1, w/t = 0.3), at which step is beta
# smallest?

# %%
answer = ...  # your answer: a step number
check("02.min_step", answer)

# %% [markdown]
# **2. Explore less.** With `explore_frac=0.1` instead of 0.3 (t = 100, beta 0.04 -> 0.1), what is beta at
# step 50? Predict it from Eq. 3 first, then compute it. (The paper never ablates w/t: notebook 05 does.)

# %%
answer = ...  # your answer: a number
check("02.explore", answer)

# %% [markdown]
# **3. Read the runs.** Which of the two runs above ended (mean of its last 5 steps) with the larger measured
# KL to the reference: `"constant"` or `"grpo_d"`? Does it match the betas they had at the end?

# %%
answer = ...  # your answer: "constant" or "grpo_d"
check("02.more_kl", answer, runs=runs)

# %% [markdown]
# **4. Implement the schedule.** Write `my_beta(s, t, beta_min, beta_max)`, Eq. 3 with w = 0.3 t: from the
# midpoint down to beta_min at s = w, then up to beta_max at s = t. It is checked against `kl.grpo_d_beta`
# on two settings at every step.

# %%
def my_beta(s, t, beta_min, beta_max):
    ...  # your code: return beta at step s


check("02.my_schedule", my_beta)

# %%
print(progress("02."))
