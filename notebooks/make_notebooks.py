"""Write notebooks 03-05 from the cell lists below, stripped of outputs (01 and 02 were written by hand).

    .venv/bin/python notebooks/make_notebooks.py        # rewrites notebooks/03_*.ipynb ... 05_*.ipynb

Edit the cells here, not the .ipynb files, so a diff of a notebook is a diff of Python source.
tests/test_notebooks.py executes every notebooks/*.ipynb top to bottom and checks it is stripped.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


NB03 = [
    md("""
# 03 · Reward and rollout inspection: why did reward move?

**What this teaches:** how to read a GRPO run from its logs. A short GRPO-D run on the tiny base is
trained with a *live view* (reward, measured KL and beta(s) redrawn as steps finish); then the
**rollout inspector** shows, step by step, the prompt image, the G completions of each prompt with their
reward components and group advantages, and every token coloured by the policy's log-prob or by its
per-token KL to the reference; the **reward inspector** re-scores the logged completions with another
format weight alpha or another answer parser and shows how rewards and advantages would have changed.

**Time:** about 20 s on a 2-core laptop CPU (8 steps x 4 prompts x G = 8). **On a GPU:** point `RUN_DIR` at a
real run (e.g. `runs/qwen2vl-2b-counting-grpo_d`) to inspect it instead of training here, or set `MODEL` to
`Qwen/Qwen2-VL-2B-Instruct` with `LOAD_IN_4BIT = True`; the inspectors read the same log files.
"""),
    code("""
# Parameters
MODEL = "tiny"          # or "Qwen/Qwen2-VL-2B-Instruct" on a GPU (with LOAD_IN_4BIT = True)
LOAD_IN_4BIT = False
TASK = "counting"
STEPS = 8
PROMPTS_PER_STEP = 4
G = 8                   # completions per prompt (grpo.num_generations)
SEED = 0
RUN_DIR = None          # a finished run's directory to inspect instead of training here
"""),
    code("""
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
"""),
    md("""
## What a run logs per completion
`rollouts.jsonl` has one row per sampled completion: its prompt, text, reward components
(`accuracy`, `format`, `reward` = accuracy + alpha x format), group `advantage`, and, for the inspector,
the decoded `tokens` with the policy's log-prob of each (`token_logprobs`) and the per-token k3 KL to the
reference (`token_kl`). The prompt's image is saved once under `images/`.
"""),
    code("""
rollouts = read_rollouts(run)
metrics = read_metrics(run)
print(len(rollouts), "completions over", rollouts["step"].nunique(), "steps;", "columns:", list(rollouts.columns))
row = rollouts.iloc[0]
list(zip(row["tokens"], row["token_logprobs"], row["token_kl"]))[:8]
"""),
    md("""
## The rollout inspector
Move the step slider, pick a prompt, filter to failures, format errors or zero-spread groups (groups
whose completions all got the same reward: their advantages are 0, so they teach nothing), and switch the
token colouring between the policy's log-prob (red = the policy was surprised by its own sample) and the
per-token KL to the reference (blue = where the policy has moved away from the base).
"""),
    code("""
from othinklab.widgets import RewardInspector, RolloutInspector, token_html

insp = RolloutInspector(run)
insp
"""),
    md("""
Everything the widget shows comes from its DataFrame twin, so it can be driven and checked from Python:
"""),
    code("""
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
"""),
    md("""
## Tokens coloured by log-prob and by KL
At step 0 the policy *is* the reference (no update yet), so every token's KL is exactly 0; by the last
step the KL concentrates on a few tokens — usually the answer digits and the words the reward changed.
`token_html` is a plain function of the logged values:
"""),
    code("""
from IPython.display import HTML, display

last = rollouts[rollouts["step"] == steps[-1]]
top = last.loc[last["token_kl"].map(max).idxmax()]   # the completion that moved furthest from the reference
print(f"prompt {top['prompt_id']}, reward {top['reward']}, advantage {top['advantage']:+.2f}")
display(HTML("<b>log-prob:</b> " + token_html(top["tokens"], top["token_logprobs"], "log-prob")))
display(HTML("<b>KL to reference:</b> " + token_html(top["tokens"], top["token_kl"], "KL to reference")))
sorted(zip(top["token_kl"], top["tokens"]), reverse=True)[:5]
"""),
    md("""
## Reward components per step
Each completion is one of four outcomes (right and well-formatted, right without the format, formatted but
wrong, neither); the left panel shows their shares per step, the right one the spread of total reward
inside each step — GRPO learns only from that spread.
"""),
    code("""
plots.reward_components(rollouts);
"""),
    md("""
## The reward inspector: what if the reward had been different?
Change alpha (the format weight) or the answer parser and the logged completions are re-scored and their
group advantages recomputed. "advantage sign changes" is the share of completions that would have been
pushed the other way.
"""),
    code("""
rinsp = RewardInspector(run)
rinsp
"""),
    code("""
import re

from othinklab.widgets import rescore, summary_by_step

same = rinsp.result()                          # alpha = 1 with the trainer's parser: reproduces the log
rinsp.alpha.value = 0.0                        # accuracy only
acc_only = rinsp.result()
rinsp.parser.value = "exact string"            # "2" must be written exactly "2" (no math-verify)
exact = rinsp.result()
rinsp.alpha.value, rinsp.parser.value = 1.0, "math-verify (R1-V)"

def last_number(completion: str, solution: str) -> float:
    \"\"\"A lenient parser: the last number anywhere in the text, tags or not.\"\"\"
    nums = re.findall(r"-?\\d+(?:\\.\\d+)?", completion)
    gold = re.findall(r"-?\\d+(?:\\.\\d+)?", solution)
    return float(bool(nums) and bool(gold) and float(nums[-1]) == float(gold[-1]))

lenient = rescore(rollouts, format_weight=1.0, accuracy_fn=last_number)
for name, df in {"alpha=0": acc_only, "exact string, alpha=0": exact, "last number anywhere": lenient}.items():
    flips = ((df["advantage"] > 0) != (df["new_advantage"] > 0)).mean()
    print(f"{name:24s} mean reward {df['new_reward'].mean():.3f} (logged {df['reward'].mean():.3f}); "
          f"accuracy {df['new_accuracy'].mean():.3f}; advantage sign changes on {flips:.1%}")
summary_by_step(lenient).round(3)
"""),
    md("## Checks (these can fail)"),
    code("""
if RUN_DIR is None:
    assert len(rollouts) == STEPS * PROMPTS_PER_STEP * G and len(metrics) == STEPS
    # the live view saw every step, drew the curves, and its rows are the logged metrics
    assert len(live.frame()) == STEPS and live.redraws >= 1 and live.image.value[:4] == b"\\x89PNG"
    assert live.frame()["reward/total"].tolist() == metrics["reward/total"].tolist()
# per-token logs line up with the completion
import re

for _, r in rollouts.iterrows():
    assert len(r["tokens"]) == len(r["token_logprobs"]) == len(r["token_kl"]) == r["length"]
    # the text is decoded without special tokens (and joined decoding may tidy spaces): compare without them;
    # a byte-level token that is part of a multi-byte character decodes alone as U+FFFD, so skip those
    joined = re.sub(r"<\\|[a-z_]+\\|>", "", "".join(r["tokens"])).replace(" ", "")
    if "\\ufffd" not in joined:
        assert joined.startswith(r["completion"].replace(" ", "")), (r["tokens"], r["completion"])
    assert max(r["token_logprobs"]) <= 0 and min(r["token_kl"]) >= 0
assert all(max(k) == 0 for k in rollouts.loc[rollouts["step"] == steps[0], "token_kl"])  # policy = reference at step 0
assert max(top["token_kl"]) > 0                                                    # ... not after the updates
# the inspector showed the prompt images and changed what it showed with the slider
assert first_shown != last_shown
assert insp.shown_images() and all(p.read_bytes()[:4] == b"\\x89PNG" for p in insp.shown_images().values())
assert insp.images.children and insp.images.children[0].children[0].value[:4] == b"\\x89PNG"
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
"""),
    md("""
## Try this
1. Set `RUN_DIR` to the demo's run (`runs/demo-counting-grpo_d-seed0`, after `make demo`) and find a step
   where reward dropped: filter to "failures" — what did the completions start doing?
2. Filter to "zero-spread groups" at several steps. Why does their share rise as the policy gets better,
   and what does that mean for the learning signal (DAPO's "dynamic sampling" drops these groups)?
3. In the reward inspector, set alpha to 0 and then to 2: which completions' advantages change sign, and
   would the format reward still have been learned first?
4. With the lenient `last_number` parser, how much of the "format" problem was really an accuracy problem?
"""),
]


NB04 = [
    md("""
# 04 · Cross-task generalization: SFT vs RL, same task and the other task

**What this teaches:** the paper's protocol for its central claim — post-train on one task (counting or
geometry) with SFT, GRPO (constant beta) or GRPO-D, then evaluate on *both* tasks: the trained one
(Table 1) and the other one (cross-task). The grid's results are read as tables (same-task, cross-task,
change against the base) and plots (bars and a heatmap), with the paper's reported numbers beside them.

**Time:** about 20 s on a 2-core laptop CPU: it runs `othinklab grid --preset smoke` (2 training steps per
cell, 16 eval prompts) — the *plumbing* of the protocol, whose numbers are noise. Set `RESULTS_CSV` to the
`results.csv` of `othinklab grid --preset tiny` (42 min on 2 cores, 3 seeds, 200 prompts) for numbers that
mean something. **On a GPU:** the grid runs on the synthetic tasks only; for the real Table 1, train the
`configs/qwen2vl_2b_*` runs and collect their `othinklab eval` results in the same columns.
"""),
    code("""
# Parameters
PRESET = "smoke"        # "tiny" for the README's numbers (about 42 minutes on 2 CPU cores)
RESULTS_CSV = None      # or the path of a finished grid's results.csv, e.g. "grid_runs/tiny/results.csv"
"""),
    code("""
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
"""),
    md("""
One row per (method, train task, seed, eval task): greedy accuracy (the paper's metric), sampled accuracy
(several samples per prompt at T = 1: what the policy actually does), format rate and `n` eval prompts.
The base is trained on nothing, so it is listed under both train tasks with the same numbers.
"""),
    md("## Same task (Table 1's layout) and cross task"),
    code("""
greedy = cross_task_matrix(results) * 100
same_task = pd.DataFrame({
    "VC (counting -> counting:ood)": greedy.xs("counting")["counting:ood"],
    "GR (geometry -> geometry:test)": greedy.xs("geometry")["geometry:test"],
}).reindex(["base", "sft", "grpo", "grpo_d"])
same_task.round(1)
"""),
    code("""
greedy.round(1)   # rows: what it was trained on; columns: what it was tested on
"""),
    md("""
## SFT vs RL: what post-training on one task does to the other
The change against the base, in accuracy points: the diagonal cells are the trained task; the
off-diagonal ones are the paper's cross-task question (the paper: RL keeps or improves the other task,
SFT loses it).
"""),
    code("""
base = greedy.xs("base", level="method")
delta = greedy.sub(base, level="train_task").round(1)
delta
"""),
    code("""
sampled = cross_task_matrix(results, "sampled_accuracy") * 100
sampled.round(1)   # sampled accuracy: less noisy than greedy on small eval sets
"""),
    md("## The same as plots, with the paper's Qwen2-VL-2B numbers as reference"),
    code("""
bars = plots.cross_task_bars(results, paper=paper)
"""),
    code("""
heat = plots.cross_task_heatmap(results, paper=paper)
"""),
    code("""
paper[paper.model == "Qwen2-VL-2B-Instruct"].pivot_table(index=["train_task", "method"], columns="eval_task", values="accuracy")
"""),
    md("""
Read the smoke preset's numbers as a check that the protocol runs, not as evidence: 2 training steps and 16
eval prompts move accuracy by less than the eval noise. The README reports the `tiny` preset (3 seeds,
200 prompts, Wilson intervals) and says which of the paper's claims it does and does not reproduce.
"""),
    md("## Checks (these can fail)"),
    code("""
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
"""),
    md("""
## Try this
1. Run `othinklab grid --preset tiny` (or set `RESULTS_CSV` to its results) and redo the delta table: on
   which cross-task direction does RL beat SFT at this scale, and do the confidence intervals in
   `cross_task.md` overlap?
2. Compare greedy and sampled accuracy per cell: where do they disagree, and which would you trust with
   16 eval prompts?
3. The paper's cross-task 2B numbers are derived from its stated relative gains (see the CSV's source
   line). Which cells of the heatmap does the paper leave blank, and what experiment would fill them?
"""),
]


NB05 = [
    md("""
# 05 · The real model on a GPU: Qwen2-VL-2B-Instruct in 4-bit NF4 + LoRA

**What this teaches:** the same flow as notebooks 01-03 — load the policy, evaluate, train GRPO-D with a
live view, evaluate again, inspect the rollouts — on the paper's model, `Qwen/Qwen2-VL-2B-Instruct`,
quantised to 4-bit NF4 (bitsandbytes) with LoRA adapters (peft), as the `configs/qwen2vl_2b_*.yaml`
configs do; what 4-bit and LoRA change (memory, what is trained, what the reference model is), and what
the real configs set differently from the tiny default.

**Time:** about 15 s on a 2-core laptop CPU, where the **CPU twin** runs: the tiny default in the same 4-bit
LoRA setup, through the same cells. **On a GPU:** the heavy cells switch to the real model by themselves
when CUDA is available *and* the weights are already in the local Hugging Face cache (nothing is
downloaded here: run `huggingface-cli download Qwen/Qwen2-VL-2B-Instruct` first); a 20-step run then takes
minutes and about 10 GB of GPU memory at 512-token completions.
"""),
    code("""
# Parameters
REAL_MODEL = "Qwen/Qwen2-VL-2B-Instruct"       # or a local directory with the checkpoint
REAL_CONFIG = "qwen2vl_2b_counting_grpo_d.yaml"
REAL_STEPS = 20
TWIN_STEPS = 4
NUM_EVAL = 8
"""),
    code("""
import tempfile
from pathlib import Path

import pandas as pd
import torch

import othinklab
from othinklab.config import load_config, to_dict


def weights_cached(name: str) -> bool:
    \"\"\"True if `name` is a local checkpoint directory or is in the local Hugging Face cache (no network).\"\"\"
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
"""),
    md("""
## What the GPU config changes
The real config against the tiny default, field by field (every field is documented in
`othinklab/config.py`): the checkpoint, bf16, 4-bit base weights, gradient checkpointing, R1-V's G, T and
512-token completions, a LoRA learning rate, and the R1-V data paths.
"""),
    code("""
def flat(d, prefix=""):
    return {k2: v2 for k, v in d.items() for k2, v2 in (flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}

real_cfg_file = CONFIGS / REAL_CONFIG
tiny_default, real = flat(to_dict(load_config(None))), flat(to_dict(load_config(real_cfg_file)))
diff = pd.DataFrame([(k, tiny_default[k], real[k]) for k in real if real[k] != tiny_default.get(k)],
                    columns=["field", "tiny default", REAL_CONFIG]).set_index("field")
diff
"""),
    md("""
## One config for both paths
On a GPU with the weights, the real config (synthetic prompts unless its R1-V data paths exist); here, the
tiny default with the *same* quantisation and adapter settings. Everything below is the same code.
"""),
    code("""
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
"""),
    md("""
## The policy: frozen 4-bit base, trainable LoRA adapters
The base weights are stored as 4-bit NF4 (`Linear4bit` layers, dequantised on the fly); only the LoRA
matrices train. The reference model of the KL term is the *same* network with its adapters switched off,
so GRPO's reference costs no second copy of the model.
"""),
    code("""
from othinklab.trainer import eval_samples, load_policy

model, processor = load_policy(cfg)
n4 = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
total = sum(p.numel() for p in model.parameters())
print(f"{n4} Linear4bit layers; trainable (LoRA) parameters: {trainable:,} of {total:,} stored elements "
      f"({trainable / total:.1%}; a 4-bit weight tensor stores two parameters per uint8 element)")
print("device:", next(model.parameters()).device)
frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad and p.dtype == torch.uint8}
"""),
    code("""
from othinklab.evaluate import evaluate, format_summary

samples = eval_samples(cfg)[:NUM_EVAL]
ev = dict(num_samples=2, temperature=cfg.grpo.temperature, max_new_tokens=cfg.grpo.max_completion_length)
before = evaluate(model, processor, samples, **ev)
print("\\n".join(format_summary(before, "before")))
"""),
    code("""
from othinklab.live import LiveTrainingView
from othinklab.trainer import train

live = LiveTrainingView(cfg.train.total_steps)
res = train(cfg, callbacks=[live], progress=False, model_and_processor=(model, processor))
live.finish()
after = evaluate(res.model, processor, samples, **ev)
print("\\n".join(format_summary(after, "after")))
"""),
    code("""
from othinklab.widgets import RolloutInspector

RolloutInspector(res.run_dir)
"""),
    md("""
## What was saved
A checkpoint holds the LoRA adapter (megabytes), not the base model (gigabytes for the real one): load it
on top of the same base checkpoint (`othinklab eval --run <run dir>`).
"""),
    code("""
ckpt = sorted((res.run_dir / "checkpoints").glob("step-*"))[-1]
files = {p.relative_to(ckpt).as_posix(): p.stat().st_size for p in ckpt.rglob("*") if p.is_file()}
files
"""),
    md("## Checks (these can fail)"),
    code("""
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
"""),
    md("""
## Try this
1. On a GPU: run with `REAL_CONFIG = "qwen2vl_2b_geometry_grpo_d.yaml"` (beta 0.0 -> 0.02) and compare its
   live KL curve with the counting one: what does beta = 0 at w = 0.3 t let the policy do?
2. Set `model.lora_r` to 8 and 64 in the twin: how do the trainable parameters and the adapter file scale?
3. Turn 4-bit off (`model.load_in_4bit=false`) in the twin and compare the checkpoint and the first step's
   log-probs: why are they close but not equal?
4. With the real model, open the rollout inspector on the last step and colour by KL: are the tokens that
   moved in the `<think>` part or in the `<answer>`?
"""),
]

NOTEBOOKS = {
    "03_reward_and_rollout_inspection.ipynb": NB03,
    "04_cross_task_generalization.ipynb": NB04,
    "05_real_model_on_gpu.ipynb": NB05,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
        nb.metadata["language_info"] = {"name": "python"}
        for i, c in enumerate(nb.cells):
            c["id"] = f"{name[:2]}-{i:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
