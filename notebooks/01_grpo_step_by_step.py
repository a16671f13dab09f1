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
# **What this teaches:** the whole of GRPO (and the paper's GRPO-D) on one batch: a group of G completions
# per prompt, the rule-based rewards `R = R_acc + alpha * R_format`, group-normalised advantages (Eq. 2), the
# dynamic KL weight beta(s) (Eq. 3), the loss with its k3 KL term (Eq. 4), and one optimizer update. Every
# piece is the package's own code, shown with `inspect.getsource` rather than copied.
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
import torch
from IPython.display import Markdown, display

from othinklab import grpo, kl, rewards
from othinklab.models import load_model
from othinklab.rollout import completion_logprobs, sample_groups
from othinklab.tasks import make_task

torch.manual_seed(SEED)
model, processor = load_model(MODEL, load_in_4bit=LOAD_IN_4BIT, lora=True, lora_r=16, lora_alpha=32)
samples = make_task(TASK).samples(PROMPTS, split="train", seed=SEED)
samples[0].image.resize((224, 224))

# %% [markdown]
# ## 1. A group of G completions per prompt
# Each prompt's image is encoded and its prompt prefilled **once**; the KV cache is repeated G times and the
# G continuations are sampled together at temperature 1.

# %%
print(samples[0].prompt_text)
roll = sample_groups(model, processor, samples, num_generations=G, max_new_tokens=48,
                     generator=torch.Generator().manual_seed(SEED))
for text in roll.texts[:G]:
    print(repr(text))

# %% [markdown]
# ## 2. Rewards (Eq. 1): accuracy + alpha x format

# %%
display(Markdown("```python\n" + inspect.getsource(rewards.format_reward) + "```"))
scores = [rewards.score(t, samples[i // G].solution, format_weight=1.0) for i, t in enumerate(roll.texts)]
r = torch.tensor([s.total for s in scores])
print("answer:", samples[0].answer)
print("rewards per completion:", r.view(PROMPTS, G))

# %% [markdown]
# ## 3. Group advantages (Eq. 2): compare each completion with its own group

# %%
display(Markdown("```python\n" + inspect.getsource(grpo.group_advantages) + "```"))
adv = grpo.group_advantages(r, G)
print(adv.view(PROMPTS, G))
print("groups with no reward spread (no signal):", grpo.zero_spread_fraction(r, G))

# %% [markdown]
# ## 4. The dynamic KL weight beta(s) (Eq. 3, GRPO-D)
# Small early (explore), larger late (exploit): it starts at the midpoint, falls to beta_min at s = w = 0.3 t,
# then rises to beta_max at s = t.

# %%
display(Markdown("```python\n" + inspect.getsource(kl.grpo_d_beta) + "```"))
T_TOTAL = 100
beta = kl.grpo_d_beta(0, T_TOTAL, 0.04, 0.1)
print([round(kl.grpo_d_beta(s, T_TOTAL, 0.04, 0.1), 4) for s in (0, 10, 20, 30, 50, 70, 100)])

# %% [markdown]
# ## 5. The loss (Eq. 4) and one update
# Reference log-probs come from the same weights with the LoRA adapter switched off (no second copy).
# With one update per batch the ratio is 1, so clipping is inert and the gradient is `A * grad log pi`.

# %%
with torch.no_grad():
    ref_logp = completion_logprobs(model, roll.prompt, roll.completion_ids, roll.completion_mask, G, disable_adapter=True)
model.train()
logp = completion_logprobs(model, roll.prompt, roll.completion_ids, roll.completion_mask, G)
loss, stats = grpo.grpo_loss(logp, None, ref_logp, adv, roll.completion_mask, beta=beta)
print(f"loss {loss.item():.4f}", {k: round(v, 5) for k, v in stats.items()})

opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
opt.zero_grad(); loss.backward(); opt.step(); model.eval()
with torch.no_grad():
    new_logp = completion_logprobs(model, roll.prompt, roll.completion_ids, roll.completion_mask, G)
mask = roll.completion_mask.float()
seq_change = ((new_logp - logp.detach()) * mask).sum(1) / mask.sum(1)
print("correlation of advantage with the change in log-prob:",
      round(torch.corrcoef(torch.stack([adv, seq_change]))[0, 1].item(), 3))

# %% [markdown]
# ## Checks (these can fail)

# %%
assert roll.completion_ids.shape[0] == PROMPTS * G
assert torch.allclose(adv.view(PROMPTS, G).sum(1), torch.zeros(PROMPTS), atol=1e-4)  # centred per group
assert abs(kl.grpo_d_beta(30, 100, 0.04, 0.1) - 0.04) < 1e-12
assert stats["kl/value"] >= 0
if grpo.zero_spread_fraction(r, G) < 1:
    # one step of GRPO raises the log-prob of better-than-average completions
    assert torch.corrcoef(torch.stack([adv, seq_change]))[0, 1] > 0
print("all checks passed")

# %% [markdown]
# ## Try this
# 1. Set `G = 2`, then `G = 16`: how does the fraction of zero-spread groups change, and why does it matter?
# 2. Replace `format_weight=1.0` by `0.0` in step 2: which completions get positive advantages now?
# 3. Compute beta with `kl.grpo_d_beta(s, 100, 0.0, 0.02)` (the geometry setting): at which step is the KL
#    term switched off completely, and why must the reference still be kept?
# 4. Use `kl_kind="k1"` in `grpo_loss`: can the KL value go negative? Why does the paper use k3?
