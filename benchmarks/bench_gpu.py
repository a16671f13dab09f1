"""The real-size path on one GPU: Qwen2-VL-2B's architecture, 4-bit NF4 + LoRA, othinklab vs TRL side by side.

Qwen/Qwen2-VL-2B-Instruct's architecture built from its config (`configs/architectures/qwen2-vl-2b.json`, 2.2B
parameters, vocabulary 151,936) with random weights (no download; the embedded tokenizer), saved once in
bfloat16 under `$OTHINKLAB_HOME`; both trainers load it 4-bit NF4 (double quantisation, bf16 compute;
the LM head and vision tower stay bf16) with the same LoRA (r=64, alpha=128 on the language model's
attention and MLP projections, as configs/qwen2vl_2b_*.yaml), gradient checkpointing on both, one
448x448 image per prompt (256 visual tokens), G=8 completions of 256 tokens forced to full length,
beta 0.04, one update per batch. Everything else as bench_vs_trl.py (same workers, one fresh process per
measurement, warm-up excluded). Prints seconds per step and peak GPU memory
(`torch.cuda.max_memory_allocated`) for each, and whether othinklab's peak is under 8 GiB.

Without CUDA (or without bitsandbytes / TRL) it prints why and exits 0. Run:

    .venv/bin/python benchmarks/bench_gpu.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_GIB = 8.0


def skip_reason() -> str | None:
    """Why this benchmark cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - missing, or no GPU backend
        return f"bitsandbytes unavailable ({exc})"
    try:
        import trl  # noqa: F401
    except ImportError:
        return "TRL is not installed (pip install -e '.[dev,bench]')"
    return None


def gpu_work(path: str, prompts: int, tokens: int, warmup: int, steps: int, chunk: int) -> dict:
    from bench_vs_trl import BETA, cpu_work

    w = cpu_work(path, "lora", warmup, steps, threads=4)
    w.update(
        prompts=prompts,
        G=8,
        tokens=tokens,
        beta=BETA,
        lr=1e-5,
        dtype="bfloat16",
        load_in_4bit=True,
        gradient_checkpointing=True,
        lora_r=64,
        lora_alpha=128,
        logprob_chunk=chunk,
        device="cuda",
    )
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2, help="prompts per step (each with G=8 completions)")
    ap.add_argument("--tokens", type=int, default=256, help="completion length, forced")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=2, help="othinklab grpo.logprob_chunk (rows of logits at a time)")
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args()
    reason = skip_reason()
    if reason:
        print(f"bench_gpu: skipped: {reason}")
        return

    import torch
    import trl
    from _models import ensure_qwen2vl_2b
    from bench_vs_trl import run_worker

    path = str(ensure_qwen2vl_2b())
    work = gpu_work(path, args.prompts, args.tokens, args.warmup, args.steps, args.chunk)
    name = torch.cuda.get_device_name(0)
    print(
        f"Qwen2-VL-2B architecture (random weights), 4-bit NF4 + LoRA r=64, gradient checkpointing, 448x448 image, "
        f"{args.prompts} prompts x G=8, {args.tokens} tokens; {name}; TRL {trl.__version__}; "
        f"{args.warmup} warm-up + {args.steps} measured steps"
    )
    toks = args.prompts * 8 * args.tokens
    res = {}
    print(f"{'trainer':<10} {'s/step':>8} {'tok/s':>7} {'peak GPU GiB':>13}")
    for side in ("othinklab", "trl"):
        r = run_worker(side, work, args.timeout, f"qwen2vl-2b/{side}")
        res[side] = r
        print(f"{side:<10} {r['step_s']:>8.2f} {toks / r['step_s']:>7.0f} {r['rss_mb'] / 1024:>13.2f}", flush=True)
    ours, theirs = res["othinklab"], res["trl"]
    b = ours["breakdown"]
    print(
        f"othinklab step: generation {b['rollout']:.2f} s, reference {b['reference']:.2f} s, "
        f"policy fwd/bwd {b['policy']:.2f} s, optimizer {b['optimizer']:.2f} s"
    )
    peak = ours["rss_mb"] / 1024
    print(f"othinklab peak GPU memory {peak:.2f} GiB: {'under' if peak < TARGET_GIB else 'OVER'} {TARGET_GIB:.0f} GiB")
    print(
        f"ratio othinklab/TRL: time {ours['step_s'] / theirs['step_s']:.2f} memory {ours['rss_mb'] / theirs['rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
