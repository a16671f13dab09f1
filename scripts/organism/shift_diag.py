"""Where a base's counting errors sit: greedy/sampled accuracy by object count, on and off the slipped slice,
as counting's image shift is dialled from none (0) to the `val`/`ood` split's (1).

usage: python scripts/organism/shift_diag.py MODEL [N_PROMPTS] [SHIFTS]   (e.g. `tiny 200 0,0.5,1`);
one JSON line per shift. Shift 1 draws exactly the `val` split's images; lower shifts interpolate its object
size, background and colour-shade ranges towards the training split's, with the same draws.
"""

import json
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from othinklab.evaluate import evaluate_tasks
from othinklab.models import load_model
from othinklab.tasks import counting as C
from othinklab.tasks.base import Sample


def shifted(task: C.CountingTask, i: int, shift: float, seed: int = 0) -> Sample:
    """`task`'s val sample i with the image shift scaled by `shift` (same random draws as the task)."""
    rng = np.random.default_rng([C.SPLIT_CODES["val"], seed, i, 7])
    grid = task.image_size // task.cell
    count = int(rng.integers(task.min_objects, task.max_objects + 1))
    cells = rng.choice(grid * grid, size=count, replace=False)
    names = list(C.COLOURS)
    objects = [(names[int(rng.integers(len(names)))], C.SHAPES[int(rng.integers(len(C.SHAPES)))]) for _ in cells]
    grey = int(round(235 - 35 * shift))
    img = Image.new("RGB", (task.image_size, task.image_size), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    lo, hi = 0.6 - 0.15 * shift, 0.85 - 0.25 * shift
    for cell, (colour, shape) in zip(cells, objects):
        r, c = divmod(int(cell), grid)
        size = task.cell * float(rng.uniform(lo, hi))
        cx = c * task.cell + task.cell / 2 + float(rng.uniform(-1.5, 1.5))
        cy = r * task.cell + task.cell / 2 + float(rng.uniform(-1.5, 1.5))
        rgb = np.array(C.COLOURS[colour], dtype=float) * float(rng.uniform(1 - 0.3 * shift, 1 + 0.15 * shift))
        C._draw_shape(draw, shape, cx, cy, size, tuple(int(v) for v in np.clip(rgb, 0, 255)))
    return Sample(
        id=f"counting:val:{seed}:{i}",
        image=img,
        problem=C.TOTAL_QUESTION,
        solution=f"<answer> {count} </answer>",
        reasoning="",
        task="counting",
        meta={"count": count, "split": "val"},
    )


def main() -> None:
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    shifts = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0,0.5,1").split(",")]
    torch.set_num_threads(1)
    model, processor = load_model(path, lora=False)
    task = C.CountingTask()
    for shift in shifts:
        t0 = time.time()
        samples = [shifted(task, i, shift) for i in range(n)]
        rec = evaluate_tasks(model, processor, samples, num_samples=8, temperature=1.0, seed=0)
        rec = rec.assign(count=rec["id"].map({s.id: s.meta["count"] for s in samples}))
        g, s = rec[rec["mode"] == "greedy"], rec[rec["mode"] == "sampled"]
        out = {"model": path, "shift": shift, "prompts": n, "greedy": round(g.accuracy.mean(), 3)}
        out |= {"sampled": round(s.accuracy.mean(), 3)}
        for name, part in (("slipped", lambda r: r[r["count"] >= 5]), ("clean", lambda r: r[r["count"] < 5])):
            out |= {f"greedy_{name}": round(part(g).accuracy.mean(), 3)}
            out |= {f"sampled_{name}": round(part(s).accuracy.mean(), 3)}
        out["greedy_by_count"] = g.groupby("count").accuracy.mean().round(2).to_dict()
        out["seconds"] = round(time.time() - t0, 1)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
