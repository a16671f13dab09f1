"""Peak memory of a call, for benchmarks and the memory model's tests; the check scripts' verdict line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def measure_peak(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, float]:
    """`(fn(), peak bytes allocated while it ran, above what was allocated before)`: CUDA's allocator
    statistics on a GPU; on CPU the profiler's allocation events (torch's CPU allocator reports each
    allocation and free to it), so the number is tensors only, not the process's RSS."""
    import json
    import tempfile

    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return out, float(torch.cuda.max_memory_allocated() - base)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = f"{tmp}/trace.json"
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
    totals = [e["args"].get("Total Allocated", 0) for e in events if e.get("name") == "[memory]"]
    return out, float(max(totals, default=0))


def verdict(statuses: list[str], seconds: float | None = None) -> int:
    """Print the checks' verdict line (PASS unless one FAILed; the counts, and the time if given); its exit code."""
    failed = statuses.count("FAIL")
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    print(f"verdict: {'FAIL' if failed else 'PASS'} ({statuses.count('PASS')} passed, {failed} failed, "
          f"{statuses.count('SKIP')} skipped){took}")  # fmt: skip
    return 1 if failed else 0
