"""Failures a user can act on, as one paragraph: out of memory (CPU or GPU), disk full, interrupted.

Why: these are not bugs, so a traceback helps nobody; what helps is the knob to turn (with its current
value), where space is needed, and the exact command that continues the run. The CLI calls
`advice_for` on any exception that is not a `UserError`; a `None` means "a real bug, keep the traceback".
"""

from __future__ import annotations

import errno
import shlex
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_MESSAGE = 1500
"""Longest error paragraph printed; longer ones (a pasted blob quoted somewhere) are cut in the middle."""

OUT_OF_MEMORY_TEXT = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")
DISK_FULL_TEXT = ("unexpected pos", "file write failed", "no space left on device")


def clamp(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` cut to `limit` characters, keeping its start and its end (the advice)."""
    if len(message) <= limit:
        return message
    head, tail = limit * 2 // 3, limit // 3
    return f"{message[:head]} ... [{len(message) - head - tail} characters left out] ... {message[-tail:]}"


def knobs(cfg: Any) -> str:
    """The memory knobs of a run with their current values."""
    if cfg is None:
        return "a smaller model, fewer prompts or shorter completions"
    return (
        f"grpo.num_generations (G, now {cfg.grpo.num_generations}), grpo.prompts_per_step (now "
        f"{cfg.grpo.prompts_per_step}), grpo.max_completion_length (now {cfg.grpo.max_completion_length}), "
        f"grpo.logprob_chunk (now {cfg.grpo.logprob_chunk}), model.max_pixels (now {cfg.model.max_pixels}), "
        f"model.gradient_checkpointing=true (now {cfg.model.gradient_checkpointing}), model.load_in_4bit=true "
        f"(now {cfg.model.load_in_4bit})"
    )


def oom_message(cfg: Any, where: str) -> str:
    """What to turn down after an out-of-memory error, with the current values."""
    return (
        f"ran out of memory {where}. Lower it with (each a config field): {knobs(cfg)}. Completed checkpoints and "
        "logs are kept: --resume continues under model.gradient_checkpointing or grpo.logprob_chunk changed (the "
        "same training, less memory); a change to the others starts a run under a new train.run_name (or in this "
        "one, if it never completed a step)"
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or a CPU allocator failure raised as RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in OUT_OF_MEMORY_TEXT)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, or torch.save's "unexpected pos" / "file write failed" on a full disk."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeError | OSError) and any(t in str(exc).lower() for t in DISK_FULL_TEXT)


def advice_for(exc: BaseException, cfg: Any = None, run_dir: Path | None = None) -> str | None:
    """One paragraph for an out-of-memory or disk-full failure; None for anything else (a bug)."""
    where = f" under {str(run_dir)!r}" if run_dir else ""
    keep = " Completed checkpoints and logs are kept; continue with --resume." if run_dir else ""
    detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    if is_out_of_memory(exc):
        return clamp(
            f"ran out of memory ({detail}). Lower it with (each a config field): {knobs(cfg)}; or close other "
            f"programs using memory.{keep}"
        )
    if is_disk_full(exc):
        return clamp(
            f"the disk is full{where} ({detail}). Free "
            "space there, lower train.keep_checkpoints or set train.log_rollouts=false, or point "
            f"train.output_dir at a disk with room. A checkpoint cut off by the full disk is never loaded.{keep}"
        )
    return None


def resume_command(config: str | None, overrides: list[str] | tuple[str, ...]) -> str:
    """The exact shell line that continues a `train` run."""
    parts = ["othinklab", "train"]
    if config:
        parts += ["--config", config]
    parts += ["--resume", *overrides]
    return " ".join(shlex.quote(p) for p in parts)


def interrupted_message(run_dir: Path | None, latest: Path | None, resume_line: str | None, signame: str) -> str:
    """What survived an interrupt and how to continue."""
    if run_dir is None:
        return f"interrupted by {signame} before the run directory was made; nothing was written"
    kept = f"the last complete checkpoint is {str(latest)!r}" if latest else "no checkpoint was complete yet"
    how = f"; continue with: {resume_line}" if resume_line else "; start the run again to redo it"
    return f"interrupted by {signame}; {kept}, logs are in {str(run_dir)!r}{how}"


@contextmanager
def signals_as_interrupts(received: list[str]) -> Iterator[None]:
    """Within the block, SIGTERM (and SIGINT) raise KeyboardInterrupt, so atomic saves clean up and the CLI
    can say what is kept; the signal's name is appended to `received`. Outside the main thread: no-op."""
    previous: dict[int, Callable[..., Any] | int | None] = {}

    def handler(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
