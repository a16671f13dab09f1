"""One RL run of the organism search, scored on the validation split; prints one JSON line.

usage: python scripts/organism/search_run.py NAME BASE_DIR CONFIG [overrides...]
(e.g. `s70_cnt_lr1e-3_s0 <base> counting_grpo_d train.seed=0 task.seed=0 train.total_steps=80
grpo.prompts_per_step=6 train.threads=1`); runs go to $ORGANISM_RUNS (default /tmp/organism_runs)."""

import contextlib
import io
import json
import os
import pathlib
import sys
import time

from othinklab.cli import main

name, base, cfgname, *over = sys.argv[1:]
out = pathlib.Path(os.environ.get("ORGANISM_RUNS", "/tmp/organism_runs"))
root = pathlib.Path(__file__).resolve().parents[2]
t0 = time.time()
args = [
    "train",
    "--config",
    str(root / "configs" / f"{cfgname}.yaml"),
    f"model.name={base}",
    "task.eval_split=val",
    "train.eval_every=40",
    "train.eval_prompts=100",
    "eval.num_samples=4",
    f"train.output_dir={out}",
    f"train.run_name={name}",
    "train.save_every=1000",
    "train.log_rollouts=false",
    *over,
]
with contextlib.redirect_stderr(io.StringIO()):
    rc = main(args)
rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
ev = [
    {k: round(v, 3) for k, v in r.items() if k.startswith("eval/") and "_lo" not in k and "_hi" not in k}
    | {"step": r["step"]}
    for r in rows
    if any(k.startswith("eval/") for k in r)
]
tr = rows[-10:]
summ = {
    k: round(sum(r[k] for r in tr) / len(tr), 3)
    for k in ("reward/accuracy", "reward/format", "groups/zero_spread_accuracy", "kl/value", "completion/truncated")
}
print(json.dumps({"name": name, "rc": rc, "secs": round(time.time() - t0), "last10": summ, "eval": ev}), flush=True)
