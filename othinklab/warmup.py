"""The tiny base, a model organism: the untrained tiny Qwen2-VL after a converged, seeded supervised warm-up
with planted flaws.

Why: GRPO needs a base that is right sometimes (a group whose G answers all fail teaches nothing), like
the paper's Qwen2-VL-2B base (42.5% counting, 15.5% geometry), and stable: a base caught mid-way through
learning turns other CPUs' last bits into tens of points (docs/results.md). The warm-up is SFT, so this
module sits above `sft`; the model loader only calls `ensure_base`. The cache key is `tiny.base_dir` (build
version and seed); the build pins the thread count so a rebuild is bit-identical.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from othinklab.rng import preserved_rng, seed_everything
from othinklab.sft import mixed_stream, train_sft
from othinklab.tasks import make_task
from othinklab.tasks.base import Sample
from othinklab.tiny import BUILD_VERSION, SEED, base_dir, build_untrained, save_pretrained

WARMUP = {
    "steps": 1440,
    "batch_size": 32,
    "learning_rate": 5e-4,
    "untagged_frac": 0.1,
    "slip_frac": 0.7,
    "seed": SEED,
}
"""The base's supervised warm-up on both tasks, long enough to converge. Two planted, seeded flaws leave RL
something a verifiable reward can find: a tenth of the targets are written without the `<think>/<answer>`
tags (the format reward's lesson), and on a systematic slice of each task (`slip`) 70% of the targets give
a slipped answer, too high. So the base is a converged mixture: on that slice it samples the right answer
about a fifth to a third of the time and says the wrong one greedily (docs/results.md)."""

COUNTING_SLIP = 2
"""Counting's slip on sets of five or more: two too many, which stays visible through the tiny vision tower's
own miscounts of large, shifted sets (one too many hid behind them, differently on each CPU; docs/results.md)."""
GEOMETRY_SLIPS = {"triangle_sum": 10, "exterior_angle": 10, "supplementary": 10, "square_perimeter": 4}
"""Geometry's slipped rules and their slip: one grid step too high (10 degrees; 4 for a square's perimeter)."""


def slip(sample: Sample) -> int:
    """How far too high the warm-up's slipped answer to `sample` is; 0 outside the slipped slice (counting:
    sets of five or more, overcounted by `COUNTING_SLIP`; geometry: `GEOMETRY_SLIPS`)."""
    if sample.task == "counting":
        return COUNTING_SLIP if int(sample.answer) >= 5 else 0
    if sample.task == "geometry":
        return GEOMETRY_SLIPS.get(sample.meta.get("rule", ""), 0)
    return 0


def _draw(seed: int, sample: Sample, salt: str) -> float:
    return zlib.crc32(f"{seed}:{salt}{sample.id}".encode()) % 1000 / 1000


def warmup_target(sample: Sample, seed: int = SEED) -> str:
    """The sample's warm-up target: its own target, except for the seeded slips (answer too high by `slip`,
    the reasoning's last number with it) and the untagged fraction (plain prose, no tags)."""
    reasoning, answer = sample.reasoning, sample.answer
    step = slip(sample)
    if step and _draw(seed, sample, "slip:") < WARMUP["slip_frac"]:
        answer = str(int(answer) + step)
        head, _, tail = reasoning.rpartition(sample.answer)
        reasoning = head + answer + tail
    if _draw(seed, sample, "") < WARMUP["untagged_frac"]:
        return f"{reasoning} The answer is {answer}."
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


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
        target_fn=lambda s: warmup_target(s, seed),
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
    """The cached base's directory, building it first if it is missing (or `force`). The build leaves the
    caller's RNGs as they were, so a seeded run draws the same whether it builds or loads."""
    from filelock import FileLock

    path = base_dir(seed)
    if not force and (path / "othinklab.json").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: a second process (a notebook, a test worker) waits for the first build instead of
    # spending minutes of CPU on an identical copy.
    with FileLock(str(path) + ".lock"):
        if force or not (path / "othinklab.json").exists():
            with preserved_rng():
                build_base(seed, progress=progress)
    return path
