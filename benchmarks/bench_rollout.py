"""Rollout speed: G completions per prompt from one shared prefill vs `model.generate` on the prompt
repeated G times (what `num_return_sequences=G` does: G copies through the vision tower and prefill).

Both sides sample the same number of tokens (no stop token is allowed, so every completion runs to
full length); greedy outputs are checked token for token. Prints median seconds per batch, tokens/s and
the speed-up for each completion length. Run: `.venv/bin/python benchmarks/bench_rollout.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from othinklab.models import load_model
from othinklab.rollout import NEVER_SAMPLED, STOP_TOKENS, encode_prompts, repeat_prompt, sample_groups, token_ids
from othinklab.tasks import make_task


def _time(fn, repeats: int) -> float:
    fn()  # warm-up, excluded
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--lengths", default="24,64,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, processor = load_model(args.model)
    samples = make_task("counting").samples(args.prompts, split="test")
    banned = token_ids(processor, NEVER_SAMPLED) + token_ids(processor, STOP_TOKENS)  # force full length
    enc = encode_prompts(processor, samples)
    repeated = repeat_prompt(enc, args.G)

    # Greedy identity check against generate (stop tokens allowed, as in real use).
    r = sample_groups(model, processor, samples, num_generations=1, max_new_tokens=24, greedy=True)
    ref = model.generate(**enc, max_new_tokens=24, do_sample=False, suppress_tokens=token_ids(processor, NEVER_SAMPLED))
    ref = ref[:, enc["input_ids"].shape[1] :]
    mask = r.completion_mask.bool()
    identical = bool(torch.equal(r.completion_ids[mask], ref[:, : r.completion_ids.shape[1]][mask]))
    print(f"greedy outputs identical to model.generate: {identical}")

    print(f"{'tokens':>6} {'othinklab s':>12} {'generate s':>11} {'speed-up':>9} {'tok/s ours':>11}")
    for n in [int(x) for x in args.lengths.split(",")]:
        # no stop token on either side: both generate exactly n tokens per completion
        ours = _time(lambda n=n: sample_groups(model, processor, samples, args.G, n, stop_at_eos=False), args.repeats)
        theirs = _time(
            lambda n=n: model.generate(
                **repeated,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                suppress_tokens=banned,
            ),
            args.repeats,
        )
        toks = args.prompts * args.G * n
        print(f"{n:>6} {ours:>12.3f} {theirs:>11.3f} {theirs / ours:>8.2f}x {toks / ours:>11.0f}")


if __name__ == "__main__":
    main()
