# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · One GRPO step, step by step
#
# **What this teaches:** the whole of GRPO (and the paper's GRPO-D) first on one group of 4 completions worked
# by hand — advantages (Eq. 2), the ratio and its clip, the k3 KL per token, beta from the schedule (Eq. 3),
# the loss (Eq. 4) — checked against `othinklab.grpo.grpo_loss`; then on a real batch of the tiny model,
# through the trainer's own four phases: `generate_and_score` (G completions per prompt, rewards
# `R = R_acc + alpha * R_format` of Eq. 1, group advantages), beta(s), `compute_loss`, `optimizer_step` and
# `log_step`. Nothing is re-implemented: every function is the package's, its source shown. Last, why the
# loss sits near 0 while the model learns, with the numbers of a short real run.
#
# **Time:** measured: 85 s run in JupyterLab (2.3 min in nbclient while other jobs ran) on the shared 2-core machine
# this was written on; the first run also builds the tiny base (~2 minutes, cached). **On a GPU:** set `MODEL = "Qwen/Qwen2-VL-2B-Instruct"` and `LOAD_IN_4BIT = True` below;
# nothing else changes.

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
# Parameters: swap in a real checkpoint on a GPU.
MODEL = "tiny"          # "tiny" (embedded base), "tiny-init", a hub id or a local directory
LOAD_IN_4BIT = False    # True on a GPU with bitsandbytes: 4-bit NF4 base weights + LoRA
TASK = "counting"       # or "geometry"
PROMPTS, G = 2, 8       # prompts in the batch, completions per prompt (the group size)
SHORT_RUN = 20          # steps of the short run at the end ("why is the loss ~0?")
SEED = 0

# %%
import inspect
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Markdown, display

from othinklab import grpo, kl, rewards, trainer
from othinklab.config import load_config
from othinklab.exercises import check, progress
from othinklab.logprobs import completion_logprobs
from othinklab.metrics import read_metrics
from othinklab.models import load_model
from othinklab.rng import seed_everything
from othinklab.steplog import RunLog


def show(fn):
    """Display a function's source from the package."""
    display(Markdown("```python\n" + inspect.getsource(fn) + "```"))


# %% [markdown]
# ## 0. A worked example: one group of 4 completions, by hand
# One prompt, G = 4 completions of 3 tokens each. Their rewards (Eq. 1 with alpha = 1): the first is right
# and well formatted (1 + 1 = 2), the third formatted but wrong (0 + 1 = 1), the other two neither (0).
# The log-probs are of each sampled token under the policy now (`logp`), under the policy that sampled it
# (`old_logp`: a *second* update on the same batch, so they differ a little) and under the reference.

# %%
R = [2.0, 0.0, 1.0, 0.0]
logp = [[-0.20, -1.00, -0.50], [-1.20, -0.30, -2.00], [-0.70, -0.90, -0.10], [-2.50, -0.40, -0.90]]
old_logp = [[-0.50, -1.00, -0.50], [-1.20, -0.40, -2.00], [-0.70, -0.80, -0.10], [-2.20, -0.40, -0.90]]
ref_logp = [[-0.40, -1.10, -0.50], [-1.00, -0.40, -2.10], [-0.70, -0.90, -0.30], [-2.40, -0.50, -0.90]]
EPS, STEP, TOTAL, BETA_MIN, BETA_MAX = 0.2, 10, 100, 0.04, 0.1

# %% [markdown]
# **Advantages (Eq. 2):** `A_i = (R_i - mean(R)) / (std(R) + 1e-4)`, the std unbiased (torch's default).

# %%
import math

mean = sum(R) / len(R)
std = math.sqrt(sum((r - mean) ** 2 for r in R) / (len(R) - 1))
A = [(r - mean) / (std + 1e-4) for r in R]
print(f"mean {mean}, std {std:.4f} -> advantages {[round(a, 4) for a in A]} (they sum to {sum(A):.1e})")

# %% [markdown]
# **Ratio and clip, per token:** `rho = exp(logp - old_logp)`; the surrogate is `min(rho * A, clip(rho, 0.8,
# 1.2) * A)`. The clip binds only where it makes the step smaller: rho above 1.2 with A > 0, or below 0.8
# with A < 0. **k3 KL per token (Eq. 5):** with `r = ref_logp - logp`, `k3 = exp(r) - r - 1` (>= 0).
# **beta (Eq. 3, GRPO-D):** from the midpoint `(beta_min + beta_max) / 2` down to `beta_min` at `w = 0.3 t`,
# then up to `beta_max` at `t`.

# %%
w = 0.3 * TOTAL
mid = (BETA_MIN + BETA_MAX) / 2
beta = mid + (BETA_MIN - mid) * STEP / w if STEP <= w else BETA_MIN + (BETA_MAX - BETA_MIN) * (STEP - w) / (TOTAL - w)
rows = []
for i in range(4):
    for t in range(3):
        rho = math.exp(logp[i][t] - old_logp[i][t])
        clipped = min(max(rho, 1 - EPS), 1 + EPS)
        surrogate = min(rho * A[i], clipped * A[i])
        r = ref_logp[i][t] - logp[i][t]
        k3 = math.exp(r) - r - 1
        rows.append({"completion": i, "token": t, "A": A[i], "rho": rho, "clip(rho)": clipped,
                     "surrogate": surrogate, "clip binds": surrogate != rho * A[i], "k3": k3,
                     "per-token loss": -(surrogate - beta * k3)})
tokens = pd.DataFrame(rows)
print(f"beta at step {STEP} of {TOTAL}: {beta:.4f}")
tokens.round(4)

# %% [markdown]
# **The loss (Eq. 4):** each completion's per-token losses are averaged over its tokens, then the
# completions are averaged. The package's `grpo_loss` on the same tensors must give the same number.

# %%
by_hand = tokens.groupby("completion")["per-token loss"].mean().mean()
t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
loss, stats = grpo.grpo_loss(t(logp), t(old_logp), t(ref_logp), t(A), torch.ones(4, 3, dtype=torch.float64),
                             beta=kl.grpo_d_beta(STEP, TOTAL, BETA_MIN, BETA_MAX), epsilon=EPS)
print(f"by hand {by_hand:.6f}   grpo.grpo_loss {loss.item():.6f}")
print({k: round(v, 4) for k, v in stats.items()})

# %% [markdown]
# ## The tiny model: build the parts `train` builds
# What `train` does before its first step, in the same order: seed, load the policy, build the step's parts
# (LoRA reference = adapter off, AdamW, LR and KL schedules, the seeded prompt stream, the sampling RNG).

# %%
overrides = [
    f"model.name={MODEL}", f"model.load_in_4bit={LOAD_IN_4BIT}", f"task.name={TASK}",
    f"grpo.prompts_per_step={PROMPTS}", f"grpo.num_generations={G}", "grpo.max_completion_length=48",
    "kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "train.total_steps=100",
    "train.learning_rate=1e-3", f"train.seed={SEED}", "train.save_every=0",
]
cfg = load_config(None, overrides)
seed_everything(cfg.train.seed)
model, processor = load_model(cfg.model)
parts = trainer.build_parts(cfg, model, processor)
print("KL schedule:", parts.schedule.name, "| trainable (LoRA) parameters:", sum(p.numel() for p in parts.params))

# %% [markdown]
# ## The loop: four named phases
# This is the trainer's loop, read from `othinklab/trainer.py` (its counters, stopwatch and log are
# bookkeeping: the cells below leave them out). `new_generation_batches` calls `generate_and_score` once per
# gradient-accumulation step (once here).

# %%
lines = inspect.getsource(trainer).splitlines()
start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("while counters.step"))
indent = len(lines[start]) - len(lines[start].lstrip())
end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= indent)
display(Markdown("```python\n" + textwrap.dedent("\n".join(lines[start:end])) + "\n```"))

# %% [markdown]
# ## 1. `generate_and_score`: G completions per prompt, rewards, advantages
# Each prompt's image is encoded and its prompt prefilled **once**; the KV cache is repeated G times and the
# G continuations are sampled together at temperature 1. Each completion is scored with
# `rewards.safe_score` (Eq. 1; a reward function that raises scores 0 instead of ending the run), and each
# completion's advantage compares it with its own group (Eq. 2). Under LoRA the reference log-probs come
# from the same weights with the adapter switched off.

# %%
show(trainer.generate_and_score)

# %%
samples = parts.data.batch(0)   # the first prompt batch of the seeded stream
batch = trainer.generate_and_score(parts, samples)
print(samples[0].prompt_text)
for text in batch.rollout.texts[:G]:
    print(repr(text))
samples[0].image.resize((224, 224))

# %% [markdown]
# ### The rewards (Eq. 1): accuracy + alpha x format

# %%
show(rewards.format_reward)
print("answer:", samples[0].answer)
print("accuracy:", torch.tensor([s.accuracy for s in batch.scores]).view(PROMPTS, G))
print("format:  ", torch.tensor([s.format for s in batch.scores]).view(PROMPTS, G))
print("reward:  ", batch.rewards.view(PROMPTS, G))

# %% [markdown]
# ### Group advantages (Eq. 2): compare each completion with its own group

# %%
show(grpo.group_advantages)
print(batch.advantages.view(PROMPTS, G))
print("groups with no reward spread (no signal):", grpo.zero_spread_fraction(batch.rewards, G))

# %% [markdown]
# ## 2. The dynamic KL weight beta(s) (Eq. 3, GRPO-D)
# Small early (explore), larger late (exploit): it starts at the midpoint, falls to beta_min at s = w = 0.3 t,
# then rises to beta_max at s = t. The trainer asks its schedule for this step's beta.

# %%
show(kl.grpo_d_beta)
beta = parts.schedule(0)
print("beta at step 0 =", beta)
print([round(parts.schedule(s), 4) for s in (0, 10, 20, 30, 50, 70, 100)])

# %% [markdown]
# ## 3. `compute_loss`: Eq. 4 and its gradient
# The policy's log-probs with gradients, then `grpo.grpo_loss`. With one update per batch the ratio is 1,
# so clipping is inert and the gradient is `A * grad log pi` plus beta times the k3 KL's gradient.

# %%
show(trainer.compute_loss)
show(grpo.grpo_loss)

# %%
stats, logps = trainer.compute_loss(parts, [batch], beta)
print({k: round(v, 5) for k, v in stats.items()})

# %% [markdown]
# ## 4. `optimizer_step`: clip, update, advance the schedules
# Did the step do what GRPO promises? Completions with a positive advantage should become more likely.

# %%
show(trainer.optimizer_step)
logp_before = logps[0]
outcome = trainer.optimizer_step(parts, trainer.Counters(), stats)
print(outcome)
r = batch.rollout
with torch.no_grad():
    logp_after = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, G)
mask = r.completion_mask.float()
seq_change = ((logp_after - logp_before) * mask).sum(1) / mask.sum(1)
corr = torch.corrcoef(torch.stack([batch.advantages, seq_change]))[0, 1].item()
print("correlation of advantage with the change in log-prob:", round(corr, 3))

# %% [markdown]
# ## 5. `log_step`: one row of `metrics.jsonl`, every completion in `rollouts.jsonl`
# The row is what the trainer logs; `log_step` also needs the run's log file and a stopwatch (bookkeeping).

# %%
show(trainer.log_step)
run = Path(tempfile.mkdtemp()) / "by-hand"
run.mkdir()
log = RunLog(run, is_main=True)
row = trainer.log_step(parts, log, 0, beta, [batch], stats, outcome, trainer.Stopwatch(), logps=logps)
log.close()
read_metrics(run).T.round(4)

# %% [markdown]
# ## Why is the loss ~0, yet the model learns?
# A short run of `train` with the same config and seed: its first step must log the same row as the step
# above (times aside), so the notebook ran the trainer's phases, not a copy of them. Then read its loss.

# %%
short = load_config(None, overrides + [f"train.total_steps={SHORT_RUN}", f"train.output_dir={run.parent}", "train.run_name=train"])
res = trainer.train(short, progress=False)
metrics = read_metrics(res.run_dir)
logged = metrics.iloc[0].to_dict()
same = lambda a, b: a == b or (a != a and b != b)  # noqa: E731  (NaN equals NaN here)
differ = {k: (row[k], logged.get(k)) for k in row if not k.startswith("time/") and not same(row[k], logged.get(k))}
print("columns of step 0 that differ from the by-hand step:", differ or "none")
metrics[["step", "loss/total", "loss/policy", "loss/kl", "reward/total", "kl/value", "kl/beta"]].round(4)

# %% [markdown]
# The loss column stays near 0 while reward and KL move. Three reasons:
#
# 1. **Advantages are zero-mean in every group** (Eq. 2), and with one update per batch the ratio is exactly
#    1 in value, so the policy term is `-mean_i(A_i * 1) = 0` whatever the model does.
# 2. **Its gradient is not 0:** `d/dtheta [rho * A] = A * grad log pi` (rho = 1), so completions with A > 0
#    are pushed up and those with A < 0 down. The loss's *value* carries no information; its gradient does.
# 3. What is left of the value is `beta * KL`, small by design. **Watch reward and KL instead** (notebooks
#    02 and 03 plot them live).
#
# The worked example again, on the first update (old = current, so rho = 1): the policy term's value is 0,
# its gradient is not.

# %%
lp = t(logp).requires_grad_(True)
policy_only, _ = grpo.grpo_loss(lp, None, None, t(A), torch.ones(4, 3, dtype=torch.float64), beta=0.0)
policy_only.backward()
print(f"policy term {policy_only.item():+.2e}; gradient norm {lp.grad.norm():.4f}; per completion "
      f"{[round(g, 3) for g in lp.grad.sum(1).tolist()]} (negative: that completion is made more likely)")
first, last = metrics.head(5).mean(numeric_only=True), metrics.tail(5).mean(numeric_only=True)
print(f"short run, first 5 steps -> last 5 steps: |loss| {metrics['loss/total'].abs().head(5).mean():.4f} -> "
      f"{metrics['loss/total'].abs().tail(5).mean():.4f}; reward {first['reward/total']:.3f} -> "
      f"{last['reward/total']:.3f}; KL {first['kl/value']:.4f} -> {last['kl/value']:.4f}")

# %% [markdown]
# ## Checks (these can fail)

# %%
assert abs(by_hand - loss.item()) < 1e-9 and abs(beta - 0.07) < 1e-12  # the worked example is grpo_loss
assert tokens["clip binds"].sum() == 2 and abs(sum(A)) < 1e-9         # two tokens clipped; zero-mean A
assert r.completion_ids.shape[0] == PROMPTS * G
assert torch.allclose(batch.advantages.view(PROMPTS, G).sum(1), torch.zeros(PROMPTS), atol=1e-4)  # centred per group
assert stats["kl/value"] >= 0 and outcome.finite
if grpo.zero_spread_fraction(batch.rewards, G) < 1:
    assert corr > 0  # one step of GRPO raises the log-prob of better-than-average completions
assert not differ, differ  # the by-hand step is the trainer's step
assert abs(policy_only.item()) < 1e-12 and lp.grad.norm() > 0.1  # value 0, gradient not
assert metrics["loss/policy"].abs().max() < 1e-4 and metrics["kl/value"].iloc[-1] > 0
print("all checks passed")

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell: ✓ is right, ✗ comes with a hint, "not yet" means no
# answer yet. Solutions: `notebooks/solutions/01_grpo_step_by_step.py`.
#
# **1. Change alpha and predict the reward.** With `reward.format_weight=0.5` (alpha = 0.5), what reward does
# a well-formatted completion with a *wrong* answer get? (`rewards.combine(accuracy, format, alpha)` is Eq. 1.)

# %%
answer = ...  # your answer: a number
check("01.alpha", answer)

# %% [markdown]
# **2. Advantages by hand.** A group of 4 where three completions got reward 1 and one got 0: give the four
# advantages (a list), as `grpo.group_advantages` would compute them. Which completion gets the biggest push?

# %%
answer = ...  # your answer: a list of 4 numbers
check("01.advantages", answer)

# %% [markdown]
# **3. When is the KL term off?** In the paper's geometry setting (beta_min = 0, beta_max = 0.02, t = 100),
# at which step is beta first exactly 0? (Why must the reference still be kept after it?)

# %%
answer = ...  # your answer: a step number
check("01.beta_zero", answer)

# %% [markdown]
# **4. Implement k2 and compare.** Write `k2(logp, ref_logp)`, the per-token estimator
# `(logp - ref_logp)^2 / 2`, for tensors of any shape. Then compare it with k3 on the worked example's tokens:
# where do they differ most, and which one can go negative (neither: which of k1, k2, k3 can)?

# %%
def k2(logp, ref_logp):
    ...  # your code: return a tensor shaped like logp


check("01.k2", k2)

# %% [markdown]
# **5. The loss's value at ratio 1.** On the first update of a batch, what is the value of the policy term
# `-mean_i(A_i * rho_i)` for any group (one number)? (Then: why does the model still learn?)

# %%
answer = ...  # your answer: a number
check("01.policy_value", answer)

# %%
print(progress("01."))
