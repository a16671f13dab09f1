"""The partly competent tiny base: the untrained tiny Qwen2-VL after a short, seeded supervised warm-up.

Why: GRPO needs a base that is right sometimes (a group whose G answers all fail teaches nothing), like
the paper's Qwen2-VL-2B base (42.5% counting, 15.5% geometry). The warm-up is SFT, so this module sits
above `sft` and the model loader only calls `ensure_base` to build the cache once. The cache key
(`tiny.base_dir`: build version and seed) is unchanged by where this code lives, and the build pins the
thread count so a rebuild is bit-identical.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from othinklab.rng import seed_everything
from othinklab.sft import mixed_stream, train_sft
from othinklab.tasks import make_task
from othinklab.tasks.base import Sample
from othinklab.tiny import BUILD_VERSION, SEED, base_dir, build_untrained, save_pretrained

WARMUP = {"steps": 480, "batch_size": 32, "learning_rate": 5e-4, "untagged_frac": 0.25, "seed": SEED}
"""The base's supervised warm-up on both tasks. 480 steps leave it partly competent on each (like the
paper's Qwen2-VL-2B base: 42.5% counting, 15.5% geometry), with a quarter of its targets written without
the `<think>/<answer>` tags so that its format is imperfect and the format reward has something to teach."""


def untagged_target(sample: Sample, seed: int = SEED) -> str:
    """The sample's target, except for a seeded `untagged_frac` of samples: plain prose, no tags."""
    if zlib.crc32(f"{seed}:{sample.id}".encode()) % 1000 < WARMUP["untagged_frac"] * 1000:
        return f"{sample.reasoning} The answer is {sample.answer}."
    return sample.target()


def build_base(seed: int = SEED, progress: bool = True) -> Path:
    """Warm the untrained tiny model up on both tasks (seeded) and cache it; returns its directory.

    One command rebuilds it from scratch: `othinklab build-base --force`.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # reduction order depends on the thread count: pin it for bit-identical rebuilds
    model, processor = build_untrained(seed)
    seed_everything(seed)
    stream = mixed_stream([make_task("counting"), make_task("geometry")], WARMUP["batch_size"], seed=seed)
    bar = tqdm(total=WARMUP["steps"], desc="warming up the tiny base", disable=not progress)

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    result = train_sft(
        model,
        processor,
        stream,
        WARMUP["steps"],
        learning_rate=WARMUP["learning_rate"],
        on_step=on_step,
        target_fn=lambda s: untagged_target(s, seed),
    )
    bar.close()
    torch.set_num_threads(threads)
    info = {
        "kind": "tiny-base",
        "seed": seed,
        "version": BUILD_VERSION,
        "warmup": WARMUP,
        "final_loss": sum(result.losses[-20:]) / min(20, len(result.losses)),
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    return save_pretrained(model, processor, base_dir(seed), extra=info)


def ensure_base(seed: int = SEED, force: bool = False, progress: bool = True) -> Path:
    """The cached base's directory, building it first if it is missing (or `force`)."""
    from filelock import FileLock

    path = base_dir(seed)
    if not force and (path / "othinklab.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second process (a notebook, a test worker) waits for the first build instead of
    # spending minutes of CPU on an identical copy.
    with FileLock(str(path) + ".lock"):
        if force or not (path / "othinklab.json").exists():
            build_base(seed, progress=progress)
    return path
