# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Reward and rollout inspection: why did reward move?
#
# **What this teaches:** how to read a GRPO run from its logs. A short GRPO-D run on the tiny base is
# trained with a *live view* (reward, measured KL and beta(s) redrawn as steps finish); then the
# **rollout inspector** shows, step by step, the prompt image, the G completions of each prompt with their
# reward components and group advantages, and every token coloured by the policy's log-prob or by its
# per-token KL to the reference; the **reward inspector** re-scores the logged completions with another
# format weight alpha or another answer parser and shows how rewards and advantages would have changed.
#
# **Time:** about 20 s on a 2-core laptop CPU (8 steps x 4 prompts x G = 8). **On a GPU:** point `RUN_DIR` at a
# real run (e.g. `runs/qwen2vl-2b-counting-grpo_d`) to inspect it instead of training here, or set `MODEL` to
# `Qwen/Qwen2-VL-2B-Instruct` with `LOAD_IN_4BIT = True`; the inspectors read the same log files.

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
    live = LiveTrainingView(cfg.train.total_steps)   # the callback: redraws the curves below as steps finish
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

# %%
if RUN_DIR is None:
    assert len(rollouts) == STEPS * PROMPTS_PER_STEP * G and len(metrics) == STEPS
    # the live view saw every step, drew the curves, and its rows are the logged metrics
    assert len(live.frame()) == STEPS and live.redraws >= 1 and live.image.value[:4] == b"\x89PNG"
    assert live.frame()["reward/total"].tolist() == metrics["reward/total"].tolist()
# per-token logs line up with the completion
import re

for _, r in rollouts.iterrows():
    assert len(r["tokens"]) == len(r["token_logprobs"]) == len(r["token_kl"]) == r["length"]
    # the text is decoded without special tokens (and joined decoding may tidy spaces): compare without them;
    # a byte-level token that is part of a multi-byte character decodes alone as U+FFFD, so skip those
    joined = re.sub(r"<\|[a-z_]+\|>", "", "".join(r["tokens"])).replace(" ", "")
    if "\ufffd" not in joined:
        assert joined.startswith(r["completion"].replace(" ", "")), (r["tokens"], r["completion"])
    assert max(r["token_logprobs"]) <= 0 and min(r["token_kl"]) >= 0
assert all(max(k) == 0 for k in rollouts.loc[rollouts["step"] == steps[0], "token_kl"])  # policy = reference at step 0
assert max(top["token_kl"]) > 0                                                    # ... not after the updates
# the inspector showed the prompt images and changed what it showed with the slider
assert first_shown != last_shown
assert insp.shown_images() and all(p.read_bytes()[:4] == b"\x89PNG" for p in insp.shown_images().values())
assert insp.images.children and insp.images.children[0].children[0].value[:4] == b"\x89PNG"
insp.colour.value = "KL to reference"
kl_table = insp.table.value
insp.colour.value = "log-prob"
lp_table = insp.table.value
assert kl_table != lp_table and "log p =" in lp_table
assert token_html(top["tokens"], top["token_kl"], "KL to reference").count("<span") == len(top["tokens"]) + 1
# re-scoring with the trainer's own reward reproduces the logged rewards and advantages
assert (same["new_reward"] - same["reward"]).abs().max() < 1e-6
assert (same["new_advantage"] - same["advantage"]).abs().max() < 1e-4
assert (acc_only["new_reward"] == acc_only["new_accuracy"]).all()
assert lenient["new_accuracy"].mean() >= same["new_accuracy"].mean()   # laxer parser, never fewer right
print("all checks passed")

# %% [markdown]
# ## Try this
# 1. Set `RUN_DIR` to the demo's run (`runs/demo-counting-grpo_d-seed0`, after `make demo`) and find a step
#    where reward dropped: filter to "failures" — what did the completions start doing?
# 2. Filter to "zero-spread groups" at several steps. Why does their share rise as the policy gets better,
#    and what does that mean for the learning signal (DAPO's "dynamic sampling" drops these groups)?
# 3. In the reward inspector, set alpha to 0 and then to 2: which completions' advantages change sign, and
#    would the format reward still have been learned first?
# 4. With the lenient `last_number` parser, how much of the "format" problem was really an accuracy problem?
