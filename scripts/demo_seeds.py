"""Run `othinklab demo` for several seeds and ship the before/after figures with their provenance.

Why: one demo run is one draw. The README's demo table gives seed 0's figures beside the range over seeds
0-4, from `data/results/demo/seeds.csv`, which this script writes (maintainer only; `make_reports.py`
renders the table):

    .venv/bin/python scripts/demo_seeds.py              # seeds 0-4, about 3 minutes each alone on 2 cores
    .venv/bin/python scripts/demo_seeds.py --seeds 0 1  # a subset
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from othinklab.demo import DEMO_TASKS, demo_overrides, run_demo
from othinklab.provenance import git_state, write_provenance

OUT = Path(__file__).resolve().parent.parent / "data" / "results" / "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--task", choices=DEMO_TASKS, default="counting")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    git, start, rows = git_state(), time.perf_counter(), []
    with tempfile.TemporaryDirectory() as runs:
        for seed in args.seeds:
            res = run_demo(seed=seed, output_dir=runs, task=args.task)
            for when in ("before", "after"):
                for _, r in res[when].iterrows():
                    rows.append({"seed": seed, "when": when, "mode": r["mode"], "n": r["n"], "accuracy": r["accuracy"],
                                 "accuracy_lo": r["accuracy_lo"], "accuracy_hi": r["accuracy_hi"],
                                 "format": r["format"], "reward": r["reward"], "seconds": round(res["seconds"], 1)})  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "seeds.csv", index=False, float_format="%.4f")
    command = "python scripts/demo_seeds.py " + shlex.join(sys.argv[1:])
    steps = int(next(o for o in demo_overrides(args.task) if o.startswith("train.total_steps=")).split("=")[1])
    extra = {"seeds": args.seeds, "steps": steps, "task": args.task}
    write_provenance(args.out / "provenance.json", command.strip(), time.perf_counter() - start, extra, git=git)
    print(f"wrote {args.out / 'seeds.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
