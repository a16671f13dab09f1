# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · The real model on a GPU: Qwen2-VL-2B-Instruct in 4-bit NF4 + LoRA — solutions
#
# *The solved copy of `notebooks/06_real_model_on_gpu.py`: the same cells, with every exercise answered (each
# check prints ✓). Try the exercises there first.*
#
# **What this teaches:** the same flow as notebooks 01-03 — load the policy, evaluate, train GRPO-D with a
# live view, evaluate again, inspect the rollouts — on the paper's model, `Qwen/Qwen2-VL-2B-Instruct`,
# quantised to 4-bit NF4 (bitsandbytes) with LoRA adapters (peft), as the `configs/qwen2vl_2b_*.yaml`
# configs do; what 4-bit and LoRA change (memory, what is trained, what the reference model is), and what
# the real configs set differently from the tiny default.
#
# **Time:** measured: 73 s run in JupyterLab for the CPU twin (2.6 min in nbclient while other jobs ran) on the
# shared 2-core machine this was written on. On the CPU the **CPU twin** runs: the tiny default in the same 4-bit LoRA setup, through
# the same cells. **On a GPU:** the heavy cells switch to the real model by themselves when CUDA is available
# *and* the weights are already in the local Hugging Face cache (nothing is downloaded here: run
# `huggingface-cli download Qwen/Qwen2-VL-2B-Instruct` first); the hardware table below estimates memory and
# time per step on a T4, an L4 and an A100. **On a laptop without a GPU:** `make real-check` runs the
# real-size path (Qwen2-VL-2B, Qwen2.5-VL-3B, Qwen3-VL-2B architectures, random weights) on the CPU.

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
REAL_MODEL = "Qwen/Qwen2-VL-2B-Instruct"       # or a local directory with the checkpoint
REAL_CONFIG = "qwen2vl_2b_counting_grpo_d.yaml"
REAL_STEPS = 20
TWIN_STEPS = 4
NUM_EVAL = 8

# %%
import tempfile
from pathlib import Path

import pandas as pd
import torch

import othinklab
from othinklab.budget import DEVICES, estimate
from othinklab.config import load_config, to_dict
from othinklab.exercises import check, progress


def weights_cached(name: str) -> bool:
    """True if `name` is a local checkpoint directory or is in the local Hugging Face cache (no network)."""
    if Path(name).is_dir():
        return (Path(name) / "config.json").exists()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = [try_to_load_from_cache(name, f) for f in ("config.json", "model.safetensors.index.json")]
    return all(isinstance(p, str) for p in found)


HAS_CUDA = torch.cuda.is_available()
HAS_WEIGHTS = weights_cached(REAL_MODEL)
REAL = HAS_CUDA and HAS_WEIGHTS
CONFIGS = Path(othinklab.__file__).resolve().parent.parent / "configs"
print(f"CUDA: {HAS_CUDA}; {REAL_MODEL} in the local cache: {HAS_WEIGHTS} -> running the",
      "REAL model" if REAL else "CPU twin (tiny default, 4-bit NF4 + LoRA)")


# %% [markdown]
# ## What the GPU config changes
# The real config against the tiny default, field by field (every field is documented in
# `othinklab/config.py`): the checkpoint, bf16, 4-bit base weights, gradient checkpointing, R1-V's G, T and
# 512-token completions, a LoRA learning rate, and the R1-V data paths.

# %%
def flat(d, prefix=""):
    return {k2: v2 for k, v in d.items() for k2, v2 in (flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}

real_cfg_file = CONFIGS / REAL_CONFIG
tiny_default, real = flat(to_dict(load_config(None))), flat(to_dict(load_config(real_cfg_file)))
diff = pd.DataFrame([(k, tiny_default[k], real[k]) for k in real if real[k] != tiny_default.get(k)],
                    columns=["field", "tiny default", REAL_CONFIG]).set_index("field")
diff

# %% [markdown]
# ## Hardware: what a step needs on a T4, an L4 and an A100
# **Estimated, not measured:** `othinklab estimate` (the memory and roofline model of `othinklab.budget`, at
# 45% of each GPU's matmul peak) for the paper's counting config and its T4 variant
# (`qwen2vl_2b_counting_grpo_d_t4.yaml`: float16, shorter completions). Nothing is loaded. A step is one
# generation batch (2 prompts x G = 8 completions of up to 512 tokens); `make gpu-check` on a real GPU measures
# the step time and peak memory to replace these numbers.

# %%
rows = []
for config in ("qwen2vl_2b_counting_grpo_d.yaml", "qwen2vl_2b_counting_grpo_d_t4.yaml"):
    est = estimate(load_config(CONFIGS / config))
    for key in ("t4", "l4", "a100-40gb"):
        gpu, peak, secs = DEVICES[key], est.peak_gib(0.75), sum(est.step_seconds(DEVICES[key]).values())
        rows.append({"config": config, "GPU": gpu.name, "peak GiB": round(peak, 1), "GPU GiB": gpu.memory_gib,
                     "fits": peak <= gpu.memory_gib, "s per step": round(secs, 1),
                     "min per 100 steps": round(secs * 100 / 60, 1), "source": "estimated"})
hardware = pd.DataFrame(rows)
hardware

# %% [markdown]
# ## One config for both paths
# On a GPU with the weights, the real config (synthetic prompts unless its R1-V data paths exist); here, the
# tiny default with the *same* quantisation and adapter settings. Everything below is the same code.

# %%
out = tempfile.mkdtemp()
if REAL:
    data_ok = Path(real["task.data_path"]).exists()
    cfg = load_config(real_cfg_file, [f"model.name={REAL_MODEL}", f"train.total_steps={REAL_STEPS}",
                                      f"task.num_eval={NUM_EVAL}", f"train.output_dir={out}", "train.save_every=0",
                                      *([] if data_ok else ["task.data_path=", "task.eval_data_path=", "task.image_root="])])
else:
    cfg = load_config(None, ["model.name=tiny", "model.load_in_4bit=true", "model.lora=true", "model.lora_r=16",
                             f"train.total_steps={TWIN_STEPS}", "grpo.prompts_per_step=4", "grpo.num_generations=8",
                             "kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "train.learning_rate=1e-3",
                             f"task.num_eval={NUM_EVAL}", f"train.output_dir={out}", "train.run_name=twin"])
print(cfg.model)

# %% [markdown]
# ## The policy: frozen 4-bit base, trainable LoRA adapters
# The base weights are stored as 4-bit NF4 (`Linear4bit` layers, dequantised on the fly); only the LoRA
# matrices train. The reference model of the KL term is the *same* network with its adapters switched off,
# so GRPO's reference costs no second copy of the model.

# %%
from othinklab.models import load_model
from othinklab.runs import eval_samples

model, processor = load_model(cfg.model)
n4 = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
total = sum(p.numel() for p in model.parameters())
print(f"{n4} Linear4bit layers; trainable (LoRA) parameters: {trainable:,} of {total:,} stored elements "
      f"({trainable / total:.1%}; a 4-bit weight tensor stores two parameters per uint8 element)")
print("device:", next(model.parameters()).device)
frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad and p.dtype == torch.uint8}

# %%
from othinklab.evaluate import evaluate_tasks, format_summary, summary_table

samples = eval_samples(cfg)[:NUM_EVAL]
ev = dict(num_samples=2, temperature=cfg.grpo.temperature, max_new_tokens=cfg.grpo.max_completion_length)
before = summary_table(evaluate_tasks(model, processor, samples, **ev))
print("\n".join(format_summary(before, "before")))

# %%
from othinklab.live import LiveTrainingView
from othinklab.trainer import train

live = LiveTrainingView(cfg.train.total_steps)
res = train(cfg, callbacks=[live], progress=False, model_and_processor=(model, processor))
live.finish()
after = summary_table(evaluate_tasks(res.model, processor, samples, **ev))
print("\n".join(format_summary(after, "after")))

# %%
from othinklab.widgets import RolloutInspector

RolloutInspector(res.run_dir)

# %% [markdown]
# ## What was saved
# A checkpoint holds the LoRA adapter (megabytes), not the base model (gigabytes for the real one): load it
# on top of the same base checkpoint (`othinklab eval --run <run dir>`).

# %%
ckpt = sorted((res.run_dir / "checkpoints").glob("step-*"))[-1]
files = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in ckpt.rglob("*") if p.is_file()}
files

# %% [markdown]
# ## Checks (these can fail)

# %%
m = live.frame()
assert n4 > 0 and 0 < trainable / total < 0.5                     # 4-bit base, LoRA-only training
assert len(m) == cfg.train.total_steps and m["grad/norm"].gt(0).all()
assert m[["reward/total", "kl/value", "loss/total"]].notna().all().all()
assert m["kl/value"].iloc[-1] > 0                                   # the adapters moved the policy off the reference
# the 4-bit base weights are exactly as loaded: only the adapters trained
after_frozen = dict(res.model.named_parameters())
assert frozen_before and all(torch.equal(after_frozen[n].detach(), w) for n, w in frozen_before.items())
assert "model/adapter_model.safetensors" in files and not any(f.endswith("model.safetensors") and "adapter" not in f for f in files)
assert before["n"].iloc[0] == after["n"].iloc[0] == len(samples)
if REAL:
    assert next(res.model.parameters()).is_cuda
print("all checks passed")

# %% [markdown]
# ## Exercises
# Replace each `...` with your answer and run the cell: ✓ is right, ✗ comes with a hint, "not yet" means no
# answer yet. Solutions: `notebooks/solutions/06_real_model_on_gpu.py`.
#
# **1. What trains?** What fraction of the stored parameter elements is trainable (the LoRA adapters)? How
# would it change with `model.lora_r=64`?

# %%
answer = trainable / total
check("06.trainable", answer, trainable=trainable, total=total)

# %% [markdown]
# **2. What is saved?** How many megabytes is the saved adapter (`model/adapter_model.safetensors`)? Compare
# it with the 2B base model's ~4.4 GB in bfloat16.

# %%
answer = files["model/adapter_model.safetensors"] / 1e6
check("06.adapter_mb", answer, files=files)

# %% [markdown]
# **3. Which GPU?** Which of the two configs in the hardware table fit a T4 by the estimate (a list of their
# file names, possibly empty)? What does the T4 variant give up to fit?

# %%
answer = hardware[hardware["GPU"].str.startswith("T4") & hardware["fits"]]["config"].tolist()
check("06.t4", answer, hardware=hardware)

# %%
print(progress("06."))
