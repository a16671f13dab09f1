"""Diagnose a base on the validation split: greedy/sampled accuracy, format, all-wrong groups, truncation.

usage: python scripts/organism/diag.py MODEL [N_PROMPTS]   (MODEL: `tiny`, or a base directory); one JSON line."""

import json
import sys
import time

import torch

from othinklab.evaluate import evaluate_tasks
from othinklab.models import load_model
from othinklab.tasks import make_task

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
G = 8
torch.manual_seed(0)
t0 = time.time()
model, proc = load_model(path, lora=False)
out = {}
for task, split in (("counting", "val"), ("geometry", "val")):
    samples = make_task(task).samples(n, split=split, seed=0)
    rec = evaluate_tasks(model, proc, samples, num_samples=G, temperature=1.0, seed=0)
    g = rec[rec["mode"] == "greedy"]
    s = rec[rec["mode"] == "sampled"]
    per = s.groupby("id")["accuracy"].agg(["mean", "std"])
    pp = s.groupby("id")["accuracy"].mean()
    out[task] = dict(
        greedy=round(g["accuracy"].mean(), 3),
        greedy_format=round(g["format"].mean(), 3),
        sampled=round(s["accuracy"].mean(), 3),
        sampled_format=round(s["format"].mean(), 3),
        zero_spread=round(float(((pp == 0) | (pp == 1)).mean()), 3),
        all_wrong=round(float((pp == 0).mean()), 3),
        truncated=round(float(s["truncated"].mean()), 3),
        length=round(float(s["length"].mean()), 1),
        pass8=round(float((pp > 0).mean()), 3),
    )
    if task == "geometry":
        s2 = s.assign(rule=s["id"].map({x.id: x.meta["rule"] for x in samples}))
        out[task]["by_rule"] = s2.groupby("rule")["accuracy"].mean().round(2).to_dict()
    else:
        s2 = s.assign(count=s["id"].map({x.id: x.meta["count"] for x in samples}))
        out[task]["by_count"] = s2.groupby("count")["accuracy"].mean().round(2).to_dict()
out["seconds"] = round(time.time() - t0, 1)
print(json.dumps(out))
