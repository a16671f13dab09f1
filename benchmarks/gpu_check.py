"""`make gpu-check`: does the real-size path work on this GPU, how fast, how much memory, versus the estimate?

Within about 8 minutes on one modern GPU it runs, each check in a fresh process with its own time limit:

1. `train-2b`: Qwen2-VL-2B (the real weights when `Qwen/Qwen2-VL-2B-Instruct` is in the local Hugging Face
   cache, else its architecture with random weights from `configs/architectures/qwen2-vl-2b.json`, 448x448 images) in 4-bit
   NF4 + LoRA r=64 with gradient checkpointing, through `othinklab train` itself (the CLI's `main`):
   3 steps of 2 prompts x G=8 and 256 completion tokens, bfloat16 (float16 where bfloat16 is missing);
   time per step (median after the first), peak GPU memory, and the memory model's estimate beside it;
2. `train-2b-fp16`: the same in float16 with loss scaling (the T4 path), 2 steps;
3. `vs-trl`: `bench_gpu.py`'s side-by-side against TRL's GRPOTrainer (1 warm-up + 1 measured step, 128 tokens);
4. `notebook-06`: notebook 06 executed on its real path (`REAL = True`; the random-weight checkpoint stands
   in when the real one is not cached), 2 training steps of 128 tokens without accumulation;
5. `nccl-2proc`: a 2-process `torchrun` NCCL run of the tiny model, when two or more GPUs exist.

One line per check (seconds per step, peak GiB, PASS/FAIL/SKIP), then a verdict; exits 1 if a check
failed. Without CUDA it prints why it skipped and exits 0 (CPU tests never depend on it). Run:

    make gpu-check        # or: .venv/bin/python benchmarks/gpu_check.py [--budget-s 480]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _measure import measure_peak, verdict  # noqa: E402

REAL_ID = "Qwen/Qwen2-VL-2B-Instruct"
GIB = 2**30


def skip_reason() -> str | None:
    """Why nothing can run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False); every check needs a GPU"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - missing, or without a GPU backend
        return f"bitsandbytes unavailable ({exc})"
    return None


def model_dir() -> tuple[str, bool, int]:
    """(path, real weights?, image side): the cached real checkpoint, else the random-weight 2B architecture."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(REAL_ID, local_files_only=True), True, 112
    except Exception:  # noqa: BLE001 - not cached (no download is attempted)
        import torch
        from _models import ensure_qwen2vl_2b

        path = str(ensure_qwen2vl_2b(448))  # built on the GPU once, then cached on disk
        torch.cuda.empty_cache()
        return path, False, 448


def train_args(path: str, dtype: str, steps: int, out: str, run: str) -> list[str]:
    return [
        f"model.name={path}",
        f"model.dtype={dtype}",
        "model.load_in_4bit=true",
        "model.lora=true",
        "model.lora_r=64",
        "model.lora_alpha=128",
        "model.gradient_checkpointing=true",
        "grpo.prompts_per_step=2",
        "grpo.num_generations=8",
        "grpo.max_completion_length=256",
        "grpo.logprob_chunk=2",
        "kl.schedule=grpo_d",
        f"train.total_steps={steps}",
        "train.save_every=0",
        "train.log_rollouts=false",
        "train.learning_rate=1e-5",
        f"train.output_dir={out}",
        f"train.run_name={run}",
    ]


# --------------------------------------------------------------------------- workers (fresh processes)
def worker_train(work: dict) -> dict:
    """`othinklab train` in this process, its peak GPU memory measured around it."""
    from othinklab.cli import main

    rc, peak = measure_peak(lambda: main(["train", *work["args"]]), device="cuda")
    rows = [json.loads(x) for x in (Path(work["out"]) / work["run"] / "metrics.jsonl").read_text().splitlines()]
    later = rows[1:] or rows
    return {
        "rc": rc,
        "peak_gib": peak / GIB,
        "step_s": statistics.median(r["time/step_s"] for r in later),
        "phases": {k: statistics.median(r[f"time/{k}_s"] for r in later) for k in ("rollout", "reference", "policy")},
        "tokens": statistics.mean(r.get("completion/length", 0.0) for r in later),
        "finite": all(r.get("skipped/nonfinite", 0.0) == 0.0 for r in rows),
    }


def run_worker(work: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# --------------------------------------------------------------------------- checks
def check_train(path: str, image: int, dtype: str, steps: int, timeout: float) -> tuple[str, str]:
    from othinklab import budget
    from othinklab.architecture import load_architecture
    from othinklab.config import load_config

    with tempfile.TemporaryDirectory() as out:
        args = train_args(path, dtype, steps, out, "gpu-check")
        r = run_worker({"args": args, "out": out, "run": "gpu-check"}, timeout)
    est = budget.estimate(load_config(None, args), arch=load_architecture(path), image_size=image)
    ok = r["rc"] == 0 and r["finite"]
    p = r["phases"]
    return ("PASS" if ok else "FAIL"), (
        f"{r['step_s']:.2f} s/step (sampling {p['rollout']:.2f}, reference {p['reference']:.2f}, policy "
        f"{p['policy']:.2f}), {r['tokens']:.0f} tokens/completion, peak {r['peak_gib']:.2f} GiB "
        f"(estimate {est.peak_gib():.2f} GiB, ratio {est.peak_gib() / max(r['peak_gib'], 1e-9):.2f})"
        + ("" if r["finite"] else ", NON-FINITE steps")
    )


def check_trl(timeout: float) -> tuple[str, str]:
    cmd = [sys.executable, str(HERE / "bench_gpu.py"), "--warmup", "1", "--steps", "1", "--tokens", "128"]
    cmd += ["--timeout", str(int(timeout))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if "skipped" in proc.stdout:
        return "SKIP", lines[-1] if lines else "skipped"
    ratio = [x for x in lines if x.startswith("ratio othinklab/TRL")]
    if proc.returncode != 0 or not ratio:
        return "FAIL", f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-600:]}"
    rows = [x for x in lines if x.startswith(("othinklab ", "trl "))]
    return "PASS", " | ".join(" ".join(x.split()) for x in rows[:2]) + f" | {ratio[-1]}"


def check_notebook(path: str, real: bool, timeout: float) -> tuple[str, str]:
    import jupytext
    from nbclient import NotebookClient

    src = (ROOT / "notebooks" / "06_real_model_on_gpu.py").read_text()
    src = src.replace("REAL_STEPS = 20", "REAL_STEPS = 2").replace("NUM_EVAL = 8", "NUM_EVAL = 4")
    # The paper-scale config accumulates 4 batches of 512 tokens per step: shorter here, to fit the budget.
    short = '"train.gradient_accumulation_steps=1", "grpo.max_completion_length=128", "eval.max_new_tokens=128"'
    src = src.replace('f"train.total_steps={REAL_STEPS}",', f'f"train.total_steps={{REAL_STEPS}}", {short},')
    if not real:
        src = src.replace(f'REAL_MODEL = "{REAL_ID}"', f"REAL_MODEL = {path!r}")
    nb = jupytext.reads(src, fmt="py:percent")
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=int(timeout), kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    if "REAL model" not in text:
        return "FAIL", "ran the CPU twin instead of the real path"
    return "PASS", f"executed top to bottom on the real path in {time.perf_counter() - start:.0f} s (2 short steps)"


def check_nccl(timeout: float) -> tuple[str, str]:
    import torch

    if torch.cuda.device_count() < 2:
        return "SKIP", f"{torch.cuda.device_count()} GPU(s); a 2-process NCCL run needs 2"
    from othinklab.tiny import ensure_untrained

    path = str(ensure_untrained())
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "othinklab.cli", "train", f"model.name={path}", "train.total_steps=2", "train.save_every=0",
               f"train.output_dir={out}", "train.run_name=nccl"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        rows = (Path(out) / "nccl" / "metrics.jsonl").read_text().splitlines() if proc.returncode == 0 else []
    if proc.returncode != 0 or len(rows) != 2:
        return "FAIL", f"exit {proc.returncode}: {proc.stderr[-600:]}"
    return "PASS", f"2 ranks, 2 steps in {time.perf_counter() - start:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=480, help="total seconds; checks that no longer fit are skipped")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker_train(json.loads(args.worker))), flush=True)
        return 0
    reason = skip_reason()
    if reason:
        print(f"gpu-check: skipped: {reason}")
        return 0
    import torch

    deadline = time.perf_counter() + args.budget_s
    bf16 = torch.cuda.is_bf16_supported()
    print(
        f"gpu-check on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU(s)), budget {args.budget_s:.0f} s"
    )
    path, real, image = model_dir()
    print(f"model: {'real ' + REAL_ID + ' weights' if real else 'Qwen2-VL-2B architecture, random weights'} at {path}")
    checks = [
        ("train-2b", 0.35, lambda t: check_train(path, image, "bfloat16" if bf16 else "float16", 3, t)),
        ("train-2b-fp16", 0.2, lambda t: check_train(path, image, "float16", 2, t)),
        ("vs-trl", 0.3, check_trl),
        ("notebook-06", 0.2, lambda t: check_notebook(path, real, t)),
        ("nccl-2proc", 0.1, check_nccl),
    ]
    results = []
    for name, share, fn in checks:
        left = deadline - time.perf_counter()
        if left < 30:
            status, detail = "SKIP", "out of the time budget"
        else:
            try:
                status, detail = fn(max(30.0, min(left, share * args.budget_s * 1.5)))
            except subprocess.TimeoutExpired:
                status, detail = "FAIL", "timed out"
            except Exception as exc:  # noqa: BLE001 - a check's failure is reported, the others still run
                status, detail = "FAIL", f"{type(exc).__name__}: {str(exc)[-600:]}"
        results.append(status)
        print(f"{name:<14} {status:<4} {detail}", flush=True)
    return verdict(results)


if __name__ == "__main__":
    sys.exit(main())
