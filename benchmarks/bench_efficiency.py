"""How close each phase of a GRPO step comes to this machine's own matmul peak, measured in the same run.

The peak: a large square `torch.matmul` timed on the same device and threads (float32 on CPU; bfloat16 on
a GPU), before and after the training steps (the higher is kept). The phases: real `othinklab.trainer.train`
steps on the benchmark models (`_models.py`: the tiny default and the ~48M real-vocabulary Qwen2-VL), LoRA,
completions forced to full length, their wall times read from `metrics.jsonl`'s `time/rollout_s`,
`time/reference_s` and `time/policy_s` (median over the measured steps). FLOPs per phase come from the
package's memory/time model (`othinklab.budget.phase_flops`, within 20% of torch's own counter in
tests/test_budget.py), from the actual prompt length. Prints, per model and phase: GFLOP, seconds, achieved
GFLOP/s and the fraction of the measured peak. Run (a few minutes on 2 cores):

    .venv/bin/python benchmarks/bench_efficiency.py
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import model_path  # noqa: E402

from othinklab import budget  # noqa: E402
from othinklab.architecture import from_config_dict  # noqa: E402
from othinklab.config import load_config  # noqa: E402
from othinklab.models import load_model  # noqa: E402
from othinklab.sampling import encode_prompts, sample_groups  # noqa: E402
from othinklab.tasks import make_task  # noqa: E402
from othinklab.trainer import train  # noqa: E402

PHASES = {"sampling": "rollout", "reference": "reference", "policy": "policy"}
"""Budget phase name -> the trainer's `time/<name>_s` key."""


def matmul_peak(device: str, n: int, repeats: int) -> float:
    """FLOP/s of an n x n x n matmul (float32 on CPU, bfloat16 on GPU), best of `repeats` timed calls."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def measure_phases(name: str, args: argparse.Namespace, device: str) -> tuple[dict[str, float], dict[str, float], int]:
    """(seconds per phase, FLOPs per phase, prompt tokens) for `name` over real training steps."""
    path = model_path(name)
    model, processor = load_model(path, lora=True, device=device)
    prompt_len = encode_prompts(processor, make_task("counting").samples(args.prompts))["input_ids"].shape[1]
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [f"model.name={path}", "model.lora=true", f"grpo.prompts_per_step={args.prompts}",
                                 f"grpo.num_generations={args.G}", f"grpo.max_completion_length={args.tokens}",
                                 "kl.schedule=constant", "kl.beta=0.04", f"train.total_steps={args.warmup + args.steps}",
                                 "train.save_every=0", "train.log_rollouts=false", f"train.output_dir={out}",
                                 f"train.threads={args.threads}"])  # fmt: skip
        rows: list[dict] = []
        full_length = functools.partial(sample_groups, stop_at_eos=False)
        train(
            cfg, model_and_processor=(model, processor), progress=False, callbacks=[rows.append], sample_fn=full_length
        )
    measured = rows[args.warmup :]
    seconds = {p: statistics.median(r[f"time/{k}_s"] for r in measured) for p, k in PHASES.items()}
    arch = from_config_dict(model.config.to_dict())
    work = budget.workload_from_config(cfg, image_size=112)
    work = budget.Workload(**{**work.__dict__, "prompt_text_tokens": prompt_len - work.image_tokens(arch)})
    flops = budget.phase_flops(arch, work, budget.holding_from_config(cfg))
    return seconds, flops, prompt_len


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,realvocab")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--matmul-n", type=int, default=0, help="matmul side for the peak (default 2048 CPU, 8192 GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = args.matmul_n or (8192 if device == "cuda" else 2048)
    peak = matmul_peak(device, n, 5)
    results = {name: measure_phases(name, args, device) for name in args.models.split(",")}
    peak = max(peak, matmul_peak(device, n, 5))
    what = "bfloat16" if device == "cuda" else f"float32, {args.threads} threads"
    print(f"matmul peak on {device} ({what}, {n}x{n}): {peak / 1e9:.1f} GFLOP/s (best of before/after)")
    print(f"{args.prompts} prompts x G={args.G}, {args.tokens} tokens forced, LoRA, {args.steps} measured steps")
    print(f"{'model':<10} {'phase':<10} {'GFLOP':>9} {'s':>7} {'GFLOP/s':>9} {'of peak':>8}")
    for name, (seconds, flops, prompt_len) in results.items():
        for phase in PHASES:
            rate = flops[phase] / seconds[phase]
            print(
                f"{name:<10} {phase:<10} {flops[phase] / 1e9:>9.2f} {seconds[phase]:>7.2f} {rate / 1e9:>9.1f} "
                f"{rate / peak:>7.1%}"
            )
        print(f"{name:<10} (prompt {prompt_len} tokens)")


if __name__ == "__main__":
    main()
