"""Provenance of a result directory: which code, command, machine and library versions made it.

Why: a shipped number is only worth what its provenance lets a reader check; a table without the
commit and the exact command cannot be reproduced or compared with a later run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "numpy", "pillow", "math-verify")
"""Libraries whose versions the numbers depend on (recorded in every provenance file)."""


def git_state(repo: str | Path | None = None) -> dict[str, Any]:
    """`{"commit": sha or "unknown", "dirty": bool or None}` of the checkout holding this package."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent.parent

    def run_git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)

    try:
        sha = run_git("rev-parse", "HEAD")
        status = run_git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if sha.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def versions() -> dict[str, str]:
    """Installed versions of `PACKAGES` (`missing` for one that is not installed) and of Python."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8", "asimd", "sve")  # fmt: skip
"""/proc/cpuinfo flags that decide which kernels torch runs (and so a CPU run's speed and its last bits)."""


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """`{"cpu_model": ..., "cpu_isa": [flags among ISA_FLAGS]}` from /proc/cpuinfo (`platform.processor()`
    and no flags where there is none, as on macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return {"cpu_model": model, "cpu_isa": [f for f in ISA_FLAGS if f in flags]}


def machine() -> dict[str, Any]:
    """What the timing depends on: CPU count, model and vector ISA, torch threads and the CPU kernels torch
    picked, platform, accelerator."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        **cpu_info(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def provenance(
    command: str, wall_seconds: float, extra: dict[str, Any] | None = None, git: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The provenance record: git state, exact command, wall seconds, machine, versions (plus `extra`). `git` is
    the `git_state()` taken when the run *started*, since the code that ran is what was checked out then; if
    the checkout moved or was edited while it ran, the state at the end is added as `git_at_end`."""
    now = git_state()
    start = git if git is not None else now
    moved = {"git_at_end": now} if now != start else {}
    return {
        **start,
        **moved,
        "command": command,
        "argv": sys.argv,
        "wall_seconds": round(float(wall_seconds), 1),
        "machine": machine(),
        "versions": versions(),
        **(extra or {}),
    }


def write_provenance(
    path: str | Path,
    command: str,
    wall_seconds: float,
    extra: dict[str, Any] | None = None,
    git: dict[str, Any] | None = None,
) -> Path:
    """Write `provenance(...)` as JSON to `path` (atomically)."""
    from othinklab.runs import atomic_write

    record = provenance(command, wall_seconds, extra, git=git)
    return atomic_write(path, json.dumps(record, indent=1, default=str) + "\n")
