# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Reward and rollout inspection: why did reward move? — solutions
#
# *The solved copy of `notebooks/03_reward_and_rollout_inspection.py`: the same cells, with every exercise answered (each
# check prints ✓). Try the exercises there first.*
#
# **What this teaches:** how to read a GRPO run from its logs. A short GRPO-D run on the tiny base is
# trained with a *live view* (reward, measured KL and beta(s) updated in place as steps finish); then the
# **rollout inspector** shows, step by step, the prompt image, the G completions of each prompt with their
# reward components and group advantages, and every token coloured by the policy's log-prob or by its
# per-token KL to the reference; the **reward inspector** re-scores the logged completions with another
# format weight alpha or another answer parser and shows how rewards and advantages would have changed.
#
# **Time:** measured: 71 s run in JupyterLab (84 s in nbclient; 8 steps x 4 prompts x G = 8) on the shared 2-core
# machine this was written on, with other jobs running. **On a GPU:** point `RUN_DIR` at a
# real run (e.g. `runs/qwen2vl-2b-counting-grpo_d`) to inspect it instead of training here, or set `MODEL` to
# `Qwen/Qwen2-VL-2B-Instruct` with `LOAD_IN_4BIT = True`; the inspectors read the same log files.

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
MODEL = "tiny"          # or "Qwen/Qwen2-VL-2B-Instruct" on a GPU (with LOAD_IN_4BIT = True)
LOAD_IN_4BIT = False
TASK = "counting"
STEPS = 8
PROMPTS_PER_STEP = 4
G = 8                   # completions per prompt (grpo.num_generations)
SEED = 0
RUN_DIR = None          # a finished run's directory to inspect instead of training here

# %%
import tempfile
from pathlib import Path

from othinklab import plots
from othinklab.config import load_config
from othinklab.exercises import check, progress
from othinklab.live import LiveTrainingView
from othinklab.metrics import read_metrics, read_rollouts
from othinklab.trainer import train

if RUN_DIR is None:
    cfg = load_config(None, [
        f"model.name={MODEL}", f"model.load_in_4bit={LOAD_IN_4BIT}", f"task.name={TASK}",
        f"train.total_steps={STEPS}", f"grpo.prompts_per_step={PROMPTS_PER_STEP}", f"grpo.num_generations={G}",
        "kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "train.learning_rate=1e-3",
        f"train.seed={SEED}", f"train.output_dir={tempfile.mkdtemp()}", "train.run_name=inspect-me",
        "train.save_every=0",
    ])
    live = LiveTrainingView(cfg.train.total_steps)   # the callback: updates the curves below as steps finish
    run = train(cfg, callbacks=[live], progress=False).run_dir
    live.finish()
else:
    live, run = None, Path(RUN_DIR)
print(run)

# %% [markdown]
# ## What a run logs per completion
# `rollouts.jsonl` has one row per sampled completion: its prompt, text, reward components
# (`accuracy`, `format`, `reward` = accuracy + alpha x format), group `advantage`, and, for the inspector,
# the decoded `tokens` with the policy's log-prob of each (`token_logprobs`) and the per-token k3 KL to the
# reference (`token_kl`). The prompt's image is saved once under `images/`.

# %%
rollouts = read_rollouts(run)
metrics = read_metrics(run)
print(len(rollouts), "completions over", rollouts["step"].nunique(), "steps;", "columns:", list(rollouts.columns))
row = rollouts.iloc[0]
list(zip(row["tokens"], row["token_logprobs"], row["token_kl"]))[:8]

# %% [markdown]
# ## The rollout inspector
# Move the step slider, pick a prompt, filter to failures, format errors or zero-spread groups (groups
# whose completions all got the same reward: their advantages are 0, so they teach nothing), and switch the
# token colouring between the policy's log-prob (red = the policy was surprised by its own sample) and the
# per-token KL to the reference (blue = where the policy has moved away from the base).

# %%
from othinklab.widgets import RewardInspector, RolloutInspector, token_html

insp = RolloutInspector(run)
insp

# %% [markdown]
# Everything the widget shows comes from its DataFrame twin, so it can be driven and checked from Python:

# %%
steps = list(insp.step.options)
first_shown = insp.view()["completion"].tolist()
insp.step.value = steps[-1]                   # what dragging the slider to the last step does
last_shown = insp.view()["completion"].tolist()
print(f"step {steps[0]}: {first_shown[0]!r}")
print(f"step {steps[-1]}: {last_shown[0]!r}")
insp.only.value = "failures"
print(f"failures at step {steps[-1]}: {len(insp.view())} of {len(last_shown)}")
insp.only.value = "all"
insp.step.value = steps[0]                    # back to the start for you (and the browser test) to explore

# %% [markdown]
# ## Tokens coloured by log-prob and by KL
# At step 0 the policy *is* the reference (no update yet), so every token's KL is exactly 0; by the last
# step the KL concentrates on a few tokens — usually the answer digits and the words the reward changed.
# `token_html` is a plain function of the logged values:

# %%
from IPython.display import HTML, display

last = rollouts[rollouts["step"] == steps[-1]]
top = last.loc[last["token_kl"].map(max).idxmax()]   # the completion that moved furthest from the reference
print(f"prompt {top['prompt_id']}, reward {top['reward']}, advantage {top['advantage']:+.2f}")
display(HTML("<b>log-prob:</b> " + token_html(top["tokens"], top["token_logprobs"], "log-prob")))
display(HTML("<b>KL to reference:</b> " + token_html(top["tokens"], top["token_kl"], "KL to reference")))
sorted(zip(top["token_kl"], top["tokens"]), reverse=True)[:5]

# %% [markdown]
# ## Reward components per step
# Each completion is one of four outcomes (right and well-formatted, right without the format, formatted but
# wrong, neither); the left panel shows their shares per step, the right one the spread of total reward
# inside each step — GRPO learns only from that spread.

# %%
plots.reward_components(rollouts);

# %% [markdown]
# ## The reward inspector: what if the reward had been different?
# Change alpha (the format weight) or the answer parser and the logged completions are re-scored and their
# group advantages recomputed. "advantage sign changes" is the share of completions that would have been
# pushed the other way.

# %%
rinsp = RewardInspector(run)
rinsp

# %%
import re

from othinklab.widgets import rescore, summary_by_step

same = rinsp.result()                          # alpha = 1 with the trainer's parser: reproduces the log
rinsp.alpha.value = 0.0                        # accuracy only
acc_only = rinsp.result()
rinsp.parser.value = "exact string"            # "2" must be written exactly "2" (no math-verify)
exact = rinsp.result()
rinsp.alpha.value, rinsp.parser.value = 1.0, "math-verify (R1-V)"

def last_number(completion: str, solution: str) -> float:
    """A lenient parser: the last number anywhere in the text, tags or not."""
    nums = re.findall(r"-?\d+(?:\.\d+)?", completion)
    gold = re.findall(r"-?\d+(?:\.\d+)?", solution)
    return float(bool(nums) and bool(gold) and float(nums[-1]) == float(gold[-1]))

lenient = rescore(rollouts, format_weight=1.0, accuracy_fn=last_number)
for name, df in {"alpha=0": acc_only, "exact string, alpha=0": exact, "last number anywhere": lenient}.items():
    flips = ((df["advantage"] > 0) != (df["new_advantage"] > 0)).mean()
    print(f"{name:24s} mean reward {df['new_reward'].mean():.3f} (logged {df['reward'].mean():.3f}); "
          f"accuracy {df['new_accuracy'].mean():.3f}; advantage sign changes on {flips:.1%}")
summary_by_step(lenient).round(3)

# %% [markdown]
# ## Checks (these can fail)
# The detailed checks of the logs and the widgets are tests (`tests/test_widgets.py`); here, that this run
# logged every completion, the inspector moved with the slider and the policy left the reference.

# %%
assert len(rollouts) == len(metrics) * PROMPTS_PER_STEP * G and first_shown != last_shown and max(top["token_kl"]) > 0
print("all checks passed")

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell: ✓ is right, ✗ comes with a hint, "not yet" means no
# answer yet. Solutions: `notebooks/solutions/03_reward_and_rollout_inspection.py`.
#
# **1. Change alpha and predict the reward.** Set alpha (the format weight) to 0 in the reward inspector:
# what would the mean reward over all logged completions have been? Predict it from the accuracy column
# first.

# %%
answer = rescore(rollouts, format_weight=0.0)["new_reward"].mean()  # alpha 0: the reward is the accuracy
print(f"mean reward with alpha 0: {answer:.3f} (mean accuracy {rollouts['accuracy'].mean():.3f})")
check("03.alpha0", answer, rollouts=rollouts)

# %% [markdown]
# **2. Zero-spread groups.** At the last logged step, what fraction of the groups taught nothing (all their
# completions got the same reward)? Filter the inspector to "zero-spread groups" to see them.

# %%
at_last = rollouts[rollouts["step"] == rollouts["step"].max()]
spread = at_last.groupby("group")["reward"].agg(lambda r: r.max() - r.min())
answer = (spread == 0).mean()
check("03.zero_spread", answer, rollouts=rollouts)

# %% [markdown]
# **3. A heavier format reward.** With alpha = 2 instead of 1, on what fraction of all completions would the
# advantage's sign (> 0 or not) have changed?

# %%
df = rescore(rollouts, format_weight=2.0)
answer = ((df["advantage"] > 0) != (df["new_advantage"] > 0)).mean()
check("03.flips", answer, rollouts=rollouts)

# %% [markdown]
# **4. Where did the policy move?** At the last step, which token (its text, as logged in `tokens`) has the
# largest per-token KL to the reference of all completions? Colour the inspector by KL to find it.

# %%
at_last = rollouts[rollouts["step"] == rollouts["step"].max()]
value, answer = max((v, tok) for toks, vals in zip(at_last["tokens"], at_last["token_kl"]) for tok, v in zip(toks, vals))
print(f"{answer!r} with KL {value}")
check("03.top_token", answer, rollouts=rollouts)

# %%
print(progress("03."))
