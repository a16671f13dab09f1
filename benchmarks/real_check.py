"""`make real-check`: the real-size path on CPU, no GPU needed (`make gpu-check` is the CUDA one).

For each of Qwen2-VL-2B, Qwen2.5-VL-3B and Qwen3-VL-2B: the full-size architecture from its published
config.json (`configs/architectures/`, random seeded bfloat16 weights, the embedded tokenizer; built once
and cached under `$OTHINKLAB_HOME`), then through the real CLI, each in its own process:

1. `train`: `othinklab train`, GRPO-D in 4-bit NF4 + LoRA r=64 + gradient checkpointing, 1 prompt x G=4,
   8 completion tokens, small images (16 visual tokens); seconds per step and per phase, the process's
   peak RSS beside the memory model's CPU estimate (`budget.cpu_rss_gib`);
2. `export`: `othinklab export --merge` of that 4-bit run (dequantised base + adapter, bfloat16), then the
   export reloaded with transformers and one greedy token generated;
3. `eval`: `othinklab eval --run` on 2 prompts, 8 new tokens, 1 sample.

One line per check (PASS/FAIL/SKIP), then a verdict; exit 1 on any FAIL. Where free memory or disk is
short for an architecture, its checks SKIP with the estimate and what is free instead of being killed.
Not part of `make test`. Run:

    make real-check                                   # all three
    .venv/bin/python benchmarks/real_check.py --only Qwen2-VL-2B --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _measure import verdict  # noqa: E402

GIB = 2**30
BIN = Path(sys.executable).parent
TRAIN_SETTINGS = [
    "model.dtype=bfloat16",
    "model.load_in_4bit=true",
    "model.lora=true",
    "model.lora_r=64",
    "model.lora_alpha=128",
    "model.gradient_checkpointing=true",
    "grpo.prompts_per_step=1",
    "grpo.num_generations=4",
    "grpo.max_completion_length=8",
    "grpo.logprob_chunk=4",
    "kl.schedule=grpo_d",
    "train.learning_rate=1e-5",
    "train.log_rollouts=false",
    "task.num_eval=2",
]
"""What every architecture trains with (the model path, steps and output directory are added)."""


def free_memory_gib() -> float:
    """MemAvailable from /proc/meminfo (what a new process can take without swapping or being killed)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("inf")


def free_disk_gib(path: Path) -> float:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free / GIB


def run_measured(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, float, float, str]:
    """(exit code, peak RSS GiB of the process tree as the kernel records it, seconds, output tail)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        deadline, timed_out = start + timeout, False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.5)
        except BaseException:  # interrupted or terminated: the child (its own session) must not outlive us
            os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
        proc.returncode = 124 if timed_out else os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read()[-3000:]
    return proc.returncode, usage.ru_maxrss * 1024 / GIB, time.perf_counter() - start, tail


def train_args(path: str, steps: int, out: str) -> list[str]:
    return [f"model.name={path}", *TRAIN_SETTINGS, f"train.total_steps={steps}", f"train.save_every={steps}",
            f"train.output_dir={out}", "train.run_name=real-check"]  # fmt: skip


def estimate_for(name: str, steps: int):
    """The memory model's estimate for this architecture's check (from the shipped config, nothing loaded)."""
    from _models import ARCH_DIR, REAL_ARCHS

    from othinklab import budget
    from othinklab.architecture import from_config_dict
    from othinklab.config import load_config

    file, side = REAL_ARCHS[name]
    arch = from_config_dict(json.loads((ARCH_DIR / file).read_text()))
    cfg = load_config(None, train_args("tiny", steps, "/nonexistent"))
    return budget.estimate(cfg, arch=arch, image_size=side), arch


def _fail(tail: str) -> str:
    lines = [x for x in tail.strip().splitlines() if x.strip()]
    return " | ".join(lines[-4:])[-700:]


def check_arch(name: str, steps: int, timeout: float, out_root: Path) -> Iterator[tuple[str, str, str]]:
    """The checks of one architecture, each (status, check, detail) yielded as soon as it is done."""
    from _models import arch_dir, ensure_arch

    from othinklab import budget

    est, arch = estimate_for(name, steps)
    need_rss = budget.cpu_rss_gib(est)
    weights_gib = arch.parameters * 2 / GIB
    path = arch_dir(name)
    cached = (path / "othinklab.json").exists()
    disk = free_disk_gib(path.parent)
    if not cached and disk < weights_gib * 1.1 + 1:
        yield ("SKIP", "build", f"needs ~{weights_gib * 1.1 + 1:.1f} GiB of disk under {path.parent}, "
                 f"{disk:.1f} GiB free")  # fmt: skip
        return
    mem = free_memory_gib()
    if not cached and mem < weights_gib + 1.5:
        yield ("SKIP", "build", f"needs ~{weights_gib + 1.5:.1f} GiB of memory, {mem:.1f} GiB available")
        return
    start = time.perf_counter()
    ensure_arch(name)
    built = time.perf_counter() - start
    yield ("PASS", "build", f"{arch.parameters / 1e9:.2f}B parameters, "
                    + ("cached" if cached else f"built in {built:.0f} s") + f" at {path}")  # fmt: skip

    mem = free_memory_gib()
    if mem < need_rss * 1.1:
        yield ("SKIP", "train", f"estimate {need_rss:.1f} GiB RSS, {mem:.1f} GiB available")
        return
    run_dir = out_root / "real-check"
    rc, peak, secs, tail = run_measured([str(BIN / "othinklab"), "train", *train_args(str(path), steps, str(out_root))],
                                        timeout)  # fmt: skip
    if rc != 0:
        yield ("FAIL", "train", f"exit {rc} after {secs:.0f} s: {_fail(tail)}")
        return
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    later = rows[1:] or rows
    mean = lambda key: sum(r.get(key, 0.0) for r in later) / len(later)  # noqa: E731
    finite = all(r.get("skipped/nonfinite", 0.0) == 0.0 for r in rows)
    ratio = need_rss / peak
    ok = finite and len(rows) == steps
    yield ("PASS" if ok else "FAIL", "train",
        f"{len(rows)} step(s), {mean('time/step_s'):.0f} s/step (sampling {mean('time/rollout_s'):.0f}, reference "
        f"{mean('time/reference_s'):.0f}, policy {mean('time/policy_s'):.0f}), peak RSS {peak:.2f} GiB (estimate "
        f"{need_rss:.2f} GiB, ratio {ratio:.2f})" + ("" if finite else ", NON-FINITE steps"))  # fmt: skip

    export = out_root / "export"
    mem, disk = free_memory_gib(), free_disk_gib(out_root)
    if mem < weights_gib * 2 + 1.5 or disk < weights_gib + 1:
        yield ("SKIP", "export --merge", f"needs ~{weights_gib * 2 + 1.5:.1f} GiB memory and "
                        f"{weights_gib + 1:.1f} GiB disk; {mem:.1f} / {disk:.1f} GiB free")  # fmt: skip
    else:
        cmd = [str(BIN / "othinklab"), "export", "--run", str(run_dir), "--out", str(export), "--merge"]
        rc, peak, secs, tail = run_measured(cmd, timeout)
        if rc != 0:
            yield ("FAIL", "export --merge", f"exit {rc} after {secs:.0f} s: {_fail(tail)}")
        else:
            reload = [sys.executable, str(Path(__file__).resolve()), "--reload", str(export)]
            rc2, peak2, secs2, tail2 = run_measured(reload, timeout)
            card = (export / "README.md").read_text() if (export / "README.md").exists() else ""
            noted = "4-bit" in card
            status = "PASS" if rc2 == 0 and "RELOADED" in tail2 and noted else "FAIL"
            detail = (f"(4-bit run) reloads: export {secs:.0f} s (peak {peak:.1f} GiB), reload + 1 token {secs2:.0f} s"
                      + ("" if noted else ", the model card does not mention the 4-bit base"))  # fmt: skip
            yield (status, "export --merge", detail if rc2 == 0 else f"reload exit {rc2}: {_fail(tail2)}")
        shutil.rmtree(export, ignore_errors=True)

    cmd = [str(BIN / "othinklab"), "eval", "--run", str(run_dir), "--n", "2", "--samples", "1",
           "--max-new-tokens", "8"]  # fmt: skip
    rc, peak, secs, tail = run_measured(cmd, timeout)
    got = [x for x in tail.splitlines() if "greedy" in x][:1]
    detail = f"2 prompts, 8 tokens, {secs:.0f} s" + (f": {' '.join(got[0].split())}" if got else "")
    yield ("PASS" if rc == 0 else "FAIL", "eval", detail if rc == 0 else f"exit {rc}: {_fail(tail)}")


def reload_export(path: str) -> int:
    """Load an export with plain transformers and generate one token (no othinklab code in the loop)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("1 + 1 =", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 1
    print(f"RELOADED {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, {model.dtype}", flush=True)
    return 0


def main() -> int:
    from _models import REAL_ARCHS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=sorted(REAL_ARCHS), help="this architecture only (repeatable)")
    ap.add_argument("--steps", type=int, default=1, help="GRPO-D steps per architecture (default 1)")
    ap.add_argument("--timeout-s", type=float, default=1500, help="per command")
    ap.add_argument("--reload", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reload:
        return reload_export(args.reload)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a running command is killed and temp dirs go
    from othinklab.tiny import home

    names = args.only or list(REAL_ARCHS)
    print(f"real-check on CPU ({os.cpu_count()} cores, {free_memory_gib():.1f} GiB available), cache {home()}; "
          f"{', '.join(names)}; {args.steps} step(s) each", flush=True)  # fmt: skip
    statuses = []
    start = time.perf_counter()
    for name in names:
        with tempfile.TemporaryDirectory(prefix="real-check-") as out:
            try:
                for status, check, detail in check_arch(name, args.steps, args.timeout_s, Path(out)):
                    statuses.append(status)
                    print(f"{status} {name} {check}: {detail}", flush=True)
            except Exception as exc:  # noqa: BLE001 - one architecture's failure is reported, the others still run
                statuses.append("FAIL")
                print(f"FAIL {name} check: {type(exc).__name__}: {str(exc)[-600:]}", flush=True)
    return verdict(statuses, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
