"""othinklab's GRPO trainer vs TRL's `GRPOTrainer` on the same work, side by side (CPU, float32).

The same work on both sides: the same model weights (loaded from the same directory), full fine-tuning
and LoRA on the same modules (othinklab's `add_lora`: r=16, alpha=32 on the language model's attention
and MLP projections; TRL gets that very peft model), the same prompts and images (othinklab's seeded
counting prompts, batch by batch), 8 prompts x G=8 completions per step, `max_completion_length` tokens
with generation forced to full length on both sides (stop tokens suppressed: othinklab's
`stop_at_eos=False`, TRL's `min_new_tokens` + `suppress_tokens`; the same control tokens are suppressed
on both), one policy update per batch (`num_iterations=1`), the same constant beta (so both run a
reference pass: a frozen copy under full fine-tuning, the adapter-disabled model under LoRA), the same
loss aggregation (othinklab `sequence` = TRL `loss_type="grpo"`), group-scaled advantages, the same
reward (othinklab's counting reward), AdamW at the same learning rate with clipping at 1.0, no gradient
checkpointing, float32, no bf16. TRL's defaults that would change the work are set explicitly (its
batch size counts completions: 64; `gradient_checkpointing=False`; `bf16=False`; `shuffle_dataset=False`).
Both sides optimise the paper's objective: TRL >= 1.16 defaults to `use_bias_correction_kl=True`, which
multiplies the KL term by the (differentiable) importance ratio and so adds a ratio-weighted KL gradient
even on-policy; OThink-MR1's Eq. 4 (and othinklab) has no such term, so it is set to False here.

Each measurement runs in a fresh subprocess (peak RSS is per process), alternating othinklab and TRL;
the first `--warmup` steps are excluded. Peak RSS is read at the end of the last measured step (before
any checkpoint is written). Run (about 12 minutes on 2 cores; needs the `bench` extra for TRL):

    .venv/bin/python benchmarks/bench_vs_trl.py

The last line reads `ratio othinklab/TRL: time <x> memory <y>` for the real-vocabulary model (the worse
of full fine-tuning and LoRA, each ratio taken separately).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS, G, TOKENS, BETA, LR = 8, 8, 24, 0.04, 1e-5
LORA = {"r": 16, "alpha": 32}


def _peak_memory_mb(device: str) -> float:
    """Peak RSS of this process on CPU; `torch.cuda.max_memory_allocated` on GPU (MiB)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_work(path: str, mode: str, warmup: int, steps: int, threads: int) -> dict:
    """The CPU comparison's settings (see the module docstring)."""
    return {
        "path": path,
        "mode": mode,
        "prompts": PROMPTS,
        "G": G,
        "tokens": TOKENS,
        "beta": BETA,
        "lr": LR,
        "dtype": "float32",
        "load_in_4bit": False,
        "gradient_checkpointing": False,
        "lora_r": LORA["r"],
        "lora_alpha": LORA["alpha"],
        "max_pixels": 0,
        "logprob_chunk": 8,
        "warmup": warmup,
        "steps": steps,
        "threads": threads,
        "device": "cpu",
    }


def _othinklab_config(w: dict, out: str):
    from othinklab.config import load_config

    return load_config(
        None,
        [
            f"model.name={w['path']}",
            f"model.dtype={w['dtype']}",
            f"model.load_in_4bit={w['load_in_4bit']}",
            f"model.gradient_checkpointing={w['gradient_checkpointing']}",
            f"model.lora={w['mode'] == 'lora'}",
            f"model.lora_r={w['lora_r']}",
            f"model.lora_alpha={w['lora_alpha']}",
            "task.name=counting",
            f"grpo.prompts_per_step={w['prompts']}",
            f"grpo.num_generations={w['G']}",
            f"grpo.max_completion_length={w['tokens']}",
            "grpo.num_iterations=1",
            "grpo.aggregation=sequence",
            f"grpo.logprob_chunk={w['logprob_chunk']}",
            "kl.schedule=constant",
            f"kl.beta={w['beta']}",
            f"train.total_steps={w['warmup'] + w['steps']}",
            f"train.learning_rate={w['lr']}",
            "train.max_grad_norm=1.0",
            "train.save_every=0",
            "train.log_rollouts=false",
            f"train.threads={w['threads']}",
            f"train.output_dir={out}",
            "train.run_name=bench",
        ],
    )


def _load(w: dict):
    from othinklab.models import load_model

    return load_model(
        w["path"],
        dtype=w["dtype"],
        load_in_4bit=w["load_in_4bit"],
        lora=w["mode"] == "lora",
        lora_r=w["lora_r"],
        lora_alpha=w["lora_alpha"],
        gradient_checkpointing=w["gradient_checkpointing"],
        max_pixels=w["max_pixels"] or None,
        device=w["device"],
    )


# --------------------------------------------------------------------------- workers (one per process)
def worker_othinklab(w: dict) -> dict:
    import functools

    import torch

    from othinklab.sampling import sample_groups
    from othinklab.trainer import train

    torch.set_num_threads(w["threads"])
    warmup, total = w["warmup"], w["warmup"] + w["steps"]
    model, processor = _load(w)
    # Force full-length completions (stop tokens masked out), as TRL's min_new_tokens does on its side.
    full_length = functools.partial(sample_groups, stop_at_eos=False)
    rows, rss = [], [0.0]

    def on_step(row: dict) -> None:
        rows.append(row)
        if len(rows) == total:
            rss[0] = _peak_memory_mb(w["device"])

    with tempfile.TemporaryDirectory() as out:
        cfg = _othinklab_config(w, out)
        train(cfg, model_and_processor=(model, processor), progress=False, callbacks=[on_step], sample_fn=full_length)
    measured = rows[warmup:]
    lengths = [r["completion/length"] for r in measured]
    assert all(n == w["tokens"] for n in lengths), f"completions not forced to full length: {lengths}"
    med = {
        k: statistics.median(r[f"time/{k}_s"] for r in measured)
        for k in ("step", "rollout", "reference", "policy", "optimizer")
    }
    return {"step_s": med["step"], "breakdown": med, "rss_mb": rss[0], "steps": [r["time/step_s"] for r in measured]}


def worker_trl(w: dict) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from othinklab.rewards import load_reward_function, safe_score
    from othinklab.runs import PromptStream
    from othinklab.sampling import NEVER_SAMPLED, STOP_TOKENS, messages_for, token_ids

    torch.set_num_threads(w["threads"])
    warmup, total = w["warmup"], w["warmup"] + w["steps"]
    model, processor = _load(w)
    with tempfile.TemporaryDirectory() as out:
        cfg = _othinklab_config(w, out)
        stream = PromptStream(cfg)
        samples = [s for i in range(total) for s in stream.batch(i)]  # othinklab's prompts, batch by batch
        ds = Dataset.from_list(
            [{"prompt": messages_for(s), "image": s.image.convert("RGB"), "solution": s.solution} for s in samples]
        )
        accuracy_fn = load_reward_function(cfg.reward.accuracy_function)

        def reward(completions, solution, **kwargs):
            return [
                safe_score(c[0]["content"], sol, cfg.reward.format_weight, accuracy_fn)[0].total
                for c, sol in zip(completions, solution)
            ]

        banned = token_ids(processor, NEVER_SAMPLED) + token_ids(processor, STOP_TOKENS)
        args = trl.GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=w["prompts"] * w["G"],  # TRL counts completions, not prompts
            gradient_accumulation_steps=1,
            num_generations=w["G"],
            max_completion_length=w["tokens"],
            generation_kwargs={"min_new_tokens": w["tokens"], "suppress_tokens": banned},
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            num_iterations=1,
            beta=w["beta"],
            epsilon=0.2,
            loss_type="grpo",  # per-completion token mean, then mean = othinklab's "sequence"
            # the paper's KL term: TRL >= 1.16 defaults to a ratio-weighted KL gradient Eq. 4 does not have
            **(
                {"use_bias_correction_kl": False}
                if "use_bias_correction_kl" in trl.GRPOConfig.__dataclass_fields__
                else {}
            ),
            scale_rewards="group",
            learning_rate=w["lr"],
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            gradient_checkpointing=w["gradient_checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False} if w["gradient_checkpointing"] else None,
            bf16=w["dtype"] == "bfloat16",
            fp16=False,
            use_cpu=w["device"] == "cpu",
            max_steps=total,
            shuffle_dataset=False,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            log_completions=False,
            dataloader_num_workers=0,
            seed=cfg.train.seed,
        )
        times, rss, t0 = [], [0.0], [0.0]

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                t0[0] = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                times.append(time.perf_counter() - t0[0])
                if len(times) == total:
                    rss[0] = _peak_memory_mb(w["device"])

        trainer = trl.GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=ds,
            processing_class=processor,
            callbacks=[Timer()],
        )
        checkpointing = bool(getattr(trainer.model, "is_gradient_checkpointing", False))
        assert checkpointing == w["gradient_checkpointing"], "TRL's gradient checkpointing differs from the request"
        trainer.train()
        lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "completions/mean_length" in r]
        assert all(n == w["tokens"] for n in lengths), f"completions not forced to full length: {lengths}"
    measured = times[warmup:]
    return {"step_s": statistics.median(measured), "rss_mb": rss[0], "steps": measured}


# --------------------------------------------------------------------------- driver
def _run_worker(side: str, model: str, mode: str, args: argparse.Namespace) -> dict:
    from _models import model_path

    path = model_path(model)  # build once here, not in the timed process
    return run_worker(
        side, cpu_work(path, mode, args.warmup, args.steps, args.threads), args.timeout, f"{model}/{mode}"
    )


def run_worker(side: str, work: dict, timeout: int, label: str) -> dict:
    """Run one measurement in a fresh process (`--worker`), returning its RESULT."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--work", json.dumps(work)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(work["threads"]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{side} worker failed on {label} (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="realvocab,tiny")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--warmup", type=int, default=1, help="steps excluded from the timing")
    ap.add_argument("--steps", type=int, default=2, help="measured steps (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per measurement process")
    ap.add_argument("--worker", choices=("othinklab", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_othinklab if args.worker == "othinklab" else worker_trl
        res = fn(json.loads(args.work))
        print("RESULT " + json.dumps(res), flush=True)
        return

    import torch
    import transformers

    try:
        import trl
    except ImportError:
        raise SystemExit("TRL is not installed: .venv/bin/pip install -e '.[dev,bench]'") from None
    from _models import info

    start = time.perf_counter()
    toks = PROMPTS * G * TOKENS
    print(
        f"othinklab vs TRL {trl.__version__} (torch {torch.__version__}, transformers {transformers.__version__}); "
        f"{PROMPTS} prompts x G={G}, {TOKENS} tokens forced, beta={BETA}, fp32 CPU, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} measured steps, one fresh process per measurement"
    )
    results: dict[tuple[str, str, str], dict] = {}
    for model in args.models.split(","):
        meta = info(model)
        print(
            f"\n== {model}"
            + (
                f" ({meta['parameters'] / 1e6:.1f}M parameters, vocab {meta['vocab_size']:,})"
                if "parameters" in meta
                else ""
            )
        )
        print(f"{'mode':<5} {'trainer':<10} {'s/step':>8} {'tok/s':>7} {'peak RSS MB':>12}  steps")
        for mode in args.modes.split(","):
            for side in ("othinklab", "trl"):
                r = _run_worker(side, model, mode, args)
                results[(model, mode, side)] = r
                steps = ", ".join(f"{s:.2f}" for s in r["steps"])
                print(
                    f"{mode:<5} {side:<10} {r['step_s']:>8.2f} {toks / r['step_s']:>7.0f} {r['rss_mb']:>12.0f}  [{steps}]",
                    flush=True,
                )
            ours, theirs = results[(model, mode, "othinklab")], results[(model, mode, "trl")]
            b = ours["breakdown"]
            print(
                f"{mode:<5} othinklab/TRL: time {ours['step_s'] / theirs['step_s']:.2f}  memory {ours['rss_mb'] / theirs['rss_mb']:.2f}"
                f"   othinklab step: generation {b['rollout']:.2f} s, reference {b['reference']:.2f} s, "
                f"policy fwd/bwd {b['policy']:.2f} s, optimizer {b['optimizer']:.2f} s",
                flush=True,
            )
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    main_model = "realvocab" if "realvocab" in args.models.split(",") else args.models.split(",")[0]
    modes = args.modes.split(",")
    t = max(results[(main_model, m, "othinklab")]["step_s"] / results[(main_model, m, "trl")]["step_s"] for m in modes)
    mem = max(
        results[(main_model, m, "othinklab")]["rss_mb"] / results[(main_model, m, "trl")]["rss_mb"] for m in modes
    )
    print(f"ratio othinklab/TRL: time {t:.2f} memory {mem:.2f}")


if __name__ == "__main__":
    main()
