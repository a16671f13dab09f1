"""Build candidate tiny bases for the organism search: one seeded warm-up, snapshots at several step counts.

usage: T=1 SLIP=0.7 python scripts/organism/build_candidates.py OUT STEPS LR UNTAGGED HIDDEN LAYERS SNAPSHOTS
(e.g. `/tmp/bases/slip70 1920 5e-4 0.10 128 2 720,960,1440,1920`: writes OUT-s720, OUT-s960, ...; T = torch
threads). The shipped base is built by `othinklab build-base` (othinklab.warmup), not by this script."""

import sys
import time

import torch
from transformers import AutoModelForImageTextToText

from othinklab import tiny, warmup
from othinklab.rng import seed_everything
from othinklab.sft import mixed_stream, train_sft
from othinklab.tasks import make_task

out, steps, lr, untagged, hidden, layers = (
    sys.argv[1],
    int(sys.argv[2]),
    float(sys.argv[3]),
    float(sys.argv[4]),
    int(sys.argv[5]),
    int(sys.argv[6]),
)
snaps = [int(x) for x in sys.argv[7].split(",")]
seed = 0
torch.set_num_threads(int(__import__("os").environ.get("T", "1")))
tok = tiny.build_tokenizer(seed)
proc = tiny.make_processor(tok, tiny.build_image_processor())
seed_everything(seed)
model = AutoModelForImageTextToText.from_config(
    tiny.tiny_config(tok, hidden=hidden, layers=layers), dtype=torch.float32
)
model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
model.generation_config.pad_token_id = tok.pad_token_id
print("params", sum(p.numel() for p in model.parameters()), flush=True)
warmup.WARMUP["untagged_frac"] = untagged
warmup.WARMUP["slip_frac"] = float(__import__("os").environ.get("SLIP", "0.7"))
seed_everything(seed)
stream = mixed_stream([make_task("counting"), make_task("geometry")], 32, seed=seed)
t0 = time.time()


def on_step(step, loss):
    if (step + 1) in snaps:
        model.eval()
        tiny.save_pretrained(
            model,
            proc,
            f"{out}-s{step + 1}",
            extra={
                "kind": "tiny-base",
                "steps": step + 1,
                "lr": lr,
                "untagged": untagged,
                "hidden": hidden,
                "layers": layers,
                "seconds": time.time() - t0,
            },
        )
        model.train()
        print("saved", step + 1, round(time.time() - t0), "loss", loss, flush=True)


train_sft(
    model, proc, stream, steps, learning_rate=lr, on_step=on_step, target_fn=lambda s: warmup.warmup_target(s, seed)
)
