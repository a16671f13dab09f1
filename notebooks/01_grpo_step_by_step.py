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
# **What this teaches:** the whole of GRPO (and the paper's GRPO-D) on one batch, by calling the trainer's
# own four phases one at a time: `generate_and_score` (a group of G completions per prompt, the rule-based
# rewards `R = R_acc + alpha * R_format` of Eq. 1, group-normalised advantages, Eq. 2), the dynamic KL weight
# beta(s) (Eq. 3), `compute_loss` (the loss with its k3 KL term, Eq. 4), `optimizer_step` and `log_step`.
# Nothing is re-implemented here: every function is the package's, its source shown with `inspect.getsource`,
# and at the end the notebook checks that its step logged exactly what `train` logs for the same step.
#
# **Time:** about 1 minute on a laptop CPU (the first run also builds the tiny base: ~2 minutes, cached).
# **On a GPU:** set `MODEL = "Qwen/Qwen2-VL-2B-Instruct"` and `LOAD_IN_4BIT = True` below; nothing else changes.

# %%
# Parameters: swap in a real checkpoint on a GPU.
MODEL = "tiny"          # "tiny" (embedded base), "tiny-init", a hub id or a local directory
LOAD_IN_4BIT = False    # True on a GPU with bitsandbytes: 4-bit NF4 base weights + LoRA
TASK = "counting"       # or "geometry"
PROMPTS, G = 2, 8       # prompts in the batch, completions per prompt (the group size)
SEED = 0

# %%
import inspect
import tempfile
import textwrap
from pathlib import Path

import torch
from IPython.display import Markdown, display

from othinklab import grpo, kl, rewards, trainer
from othinklab.config import load_config
from othinklab.logprobs import completion_logprobs
from othinklab.metrics import read_metrics
from othinklab.models import load_model
from othinklab.rng import seed_everything
from othinklab.steplog import RunLog


def show(fn):
    """Display a function's source from the package."""
    display(Markdown("```python\n" + inspect.getsource(fn) + "```"))


overrides = [
    f"model.name={MODEL}", f"model.load_in_4bit={LOAD_IN_4BIT}", f"task.name={TASK}",
    f"grpo.prompts_per_step={PROMPTS}", f"grpo.num_generations={G}", "grpo.max_completion_length=48",
    "kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "train.total_steps=100",
    "train.learning_rate=1e-3", f"train.seed={SEED}", "train.save_every=0",
]
cfg = load_config(None, overrides)
# What `train` does before its first step, in the same order: seed, load the policy, build the step's parts
# (LoRA reference = adapter off, AdamW, LR and KL schedules, the seeded prompt stream, the sampling RNG).
seed_everything(cfg.train.seed)
model, processor = load_model(cfg.model)
parts = trainer.build_parts(cfg, model, processor)
counters, clock = trainer.Counters(), trainer.Stopwatch()
print("KL schedule:", parts.schedule.name, "| trainable (LoRA) parameters:", sum(p.numel() for p in parts.params))

# %% [markdown]
# ## The loop: four named phases
# This is the trainer's loop, read from `othinklab/trainer.py`; the cells below run one pass of it by hand.
# `new_generation_batches` calls `generate_and_score` once per gradient-accumulation step (once here).

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
clock.start_step()
samples = parts.data.batch(counters.batch_index)
counters.batch_index += 1
batch = trainer.generate_and_score(parts, samples, clock=clock)
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
beta = parts.schedule(counters.step)
print("beta at step", counters.step, "=", beta)
print([round(parts.schedule(s), 4) for s in (0, 10, 20, 30, 50, 70, 100)])

# %% [markdown]
# ## 3. `compute_loss`: Eq. 4 and its gradient
# The policy's log-probs with gradients, then `grpo.grpo_loss`. With one update per batch the ratio is 1,
# so clipping is inert and the gradient is `A * grad log pi` plus beta times the k3 KL's gradient.

# %%
show(trainer.compute_loss)
show(grpo.grpo_loss)

# %%
stats, logps = trainer.compute_loss(parts, [batch], beta, clock)
print({k: round(v, 5) for k, v in stats.items()})

# %% [markdown]
# ## 4. `optimizer_step`: clip, update, advance the schedules
# Did the step do what GRPO promises? Completions with a positive advantage should become more likely.

# %%
show(trainer.optimizer_step)
logp_before = logps[0]
outcome = trainer.optimizer_step(parts, counters, stats, clock)
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

# %%
show(trainer.log_step)
run = Path(tempfile.mkdtemp()) / "by-hand"
run.mkdir()
log = RunLog(run, is_main=True)
row = trainer.log_step(parts, log, counters.step, beta, [batch], stats, outcome, clock, logps=logps)
log.close()
counters.step += 1
read_metrics(run).T.round(4)

# %% [markdown]
# ## The same step through `train`
# One step of `train` with the same config and seed must log the same row (times aside): the notebook
# ran the trainer's phases, not a copy of them.

# %%
one = load_config(None, overrides + ["train.total_steps=1", f"train.output_dir={run.parent}", "train.run_name=train"])
res = trainer.train(one, progress=False)
logged = read_metrics(res.run_dir).iloc[0].to_dict()
same = lambda a, b: a == b or (a != a and b != b)  # NaN equals NaN here
differ = {k: (row[k], logged.get(k)) for k in row if not k.startswith("time/") and not same(row[k], logged.get(k))}
print("columns that differ:", differ or "none")

# %% [markdown]
# ## Checks (these can fail)

# %%
assert r.completion_ids.shape[0] == PROMPTS * G
assert torch.allclose(batch.advantages.view(PROMPTS, G).sum(1), torch.zeros(PROMPTS), atol=1e-4)  # centred per group
assert abs(kl.grpo_d_beta(30, 100, 0.04, 0.1) - 0.04) < 1e-12 and abs(beta - 0.07) < 1e-12
assert stats["kl/value"] >= 0 and outcome.finite
if grpo.zero_spread_fraction(batch.rewards, G) < 1:
    # one step of GRPO raises the log-prob of better-than-average completions
    assert corr > 0
assert not differ, differ  # the by-hand step is the trainer's step
print("all checks passed")

# %% [markdown]
# ## Try this
# 1. Set `G = 2`, then `G = 16`: how does the fraction of zero-spread groups change, and why does it matter?
# 2. Add `"reward.format_weight=0"` to `overrides`: which completions get positive advantages now?
# 3. Compute beta with `kl.grpo_d_beta(s, 100, 0.0, 0.02)` (the geometry setting): at which step is the KL
#    term switched off completely, and why must the reference still be kept?
# 4. Add `"kl.estimator=k1"` to `overrides`: can the KL value go negative? Why does the paper use k3?
