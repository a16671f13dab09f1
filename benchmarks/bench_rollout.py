"""Rollout speed: G completions per prompt from one shared prefill vs `model.generate` on the prompt
repeated G times (what `num_return_sequences=G` does: G copies through the vision tower and prefill).

Both benchmark models (see `_models.py`): the tiny default and the ~48M real-vocabulary Qwen2-VL. Both
sides sample the same number of tokens (stop tokens suppressed on both, so every completion runs to full
length; the same control tokens suppressed), temperature 1, no top-k/top-p. Greedy outputs are checked
token for token against `generate` on each model (stop tokens allowed, as in real use). Prints median
seconds per batch (one warm-up call per side excluded), generated tokens/s and the speed-up for each
completion length. Run (about 6 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_rollout.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import describe, model_path  # noqa: E402

from othinklab.logprobs import repeat_prompt  # noqa: E402
from othinklab.models import load_model  # noqa: E402
from othinklab.sampling import (  # noqa: E402
    NEVER_SAMPLED,
    STOP_TOKENS,
    encode_prompts,
    sample_groups,
    token_ids,
)
from othinklab.tasks import make_task  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(name: str, args: argparse.Namespace, repeats: int) -> list[float]:
    model, processor = load_model(model_path(name))
    print(f"\n== {describe(name, model)}; {args.prompts} prompts x G={args.G}, {repeats} timed run(s) per cell")
    samples = make_task("counting").samples(args.prompts, split="test")
    never = token_ids(processor, NEVER_SAMPLED)
    banned = never + token_ids(processor, STOP_TOKENS)  # force full length
    enc = encode_prompts(processor, samples)
    repeated = repeat_prompt(enc, args.G)

    # Greedy identity check against generate (stop tokens allowed, as in real use), G = 1 and G = 2.
    n_check = 24
    ref = model.generate(**enc, max_new_tokens=n_check, do_sample=False, suppress_tokens=never)
    ref = ref[:, enc["input_ids"].shape[1] :]
    identical = True
    for G in (1, 2):
        r = sample_groups(model, processor, samples, num_generations=G, max_new_tokens=n_check, greedy=True)
        for g in range(G):
            got, mask = r.completion_ids[g::G], r.completion_mask[g::G].bool()
            identical &= bool(torch.equal(got[mask], ref[:, : got.shape[1]][mask]))
    print(f"greedy outputs identical to model.generate ({n_check} tokens): {identical}")

    def ours(n: int):
        return sample_groups(model, processor, samples, args.G, n, stop_at_eos=False)

    def theirs(n: int):
        return model.generate(
            **repeated, max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=0, top_p=1.0, suppress_tokens=banned
        )

    ours(4), theirs(4)  # warm-up, excluded
    print(
        f"{'tokens':>6} {'othinklab s':>12} {'generate s':>11} {'speed-up':>9} {'tok/s ours':>11} {'tok/s generate':>15}"
    )
    gains = []
    for n in [int(x) for x in args.lengths.split(",")]:
        t_ours = _median_time(lambda n=n: ours(n), repeats)
        t_theirs = _median_time(lambda n=n: theirs(n), repeats)
        toks = args.prompts * args.G * n
        gains.append(t_theirs / t_ours)
        print(
            f"{n:>6} {t_ours:>12.3f} {t_theirs:>11.3f} {t_theirs / t_ours:>8.2f}x {toks / t_ours:>11.0f} {toks / t_theirs:>15.0f}",
            flush=True,
        )
    return gains if identical else [0.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,realvocab")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--lengths", default="24,64,256")
    ap.add_argument("--repeats", default="tiny=3,realvocab=1", help="timed runs per cell, per model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats = dict(kv.split("=") for kv in args.repeats.split(",")) if "=" in args.repeats else {}
    worst = []
    with torch.no_grad():
        for name in args.models.split(","):
            n = int(repeats.get(name, args.repeats if "=" not in args.repeats else 1))
            worst.append((name, min(bench_model(name, args, n))))
    print(
        "\nsmallest speed-up over lengths (0 = greedy outputs differ): " + ", ".join(f"{m} {g:.2f}x" for m, g in worst)
    )


if __name__ == "__main__":
    main()
