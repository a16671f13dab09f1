"""`othinklab.failures`: out-of-memory and disk-full advice as one paragraph, real bugs keep their traceback,
messages clamped, and no advice to `--resume` a command that lacks it."""

from __future__ import annotations

import errno

import pytest

from othinklab import failures
from othinklab.cli import main


def test_sft_failures_do_not_advise_a_resume_it_lacks(tmp_path, capsys, monkeypatch):
    """Class 11: `sft` advised `--resume`, which only `train` has."""
    import othinklab.sft_run

    def out_of_memory(cfg, progress=True, model_and_processor=None):
        raise MemoryError("CPU allocator")

    monkeypatch.setattr(othinklab.sft_run, "run_sft", out_of_memory)
    assert main(["sft", "model.name=tiny-init", f"train.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "--resume" not in err


FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]


# --------------------------------------------------------------------------- resources and noise
@pytest.mark.parametrize(
    "exc, needle",
    [
        (MemoryError(), "ran out of memory"),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
            "out of memory",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0"), "the disk is full"),
    ],
)
def test_out_of_memory_and_disk_full_get_one_paragraph_of_advice(exc, needle, tmp_path, monkeypatch, capsys):
    import othinklab.trainer

    def fails(cfg, resume=False, **kwargs):
        raise exc

    monkeypatch.setattr(othinklab.trainer, "train", fails)
    assert main(["train", *FAST, f"train.output_dir={tmp_path}", "grpo.num_generations=3"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1
    if "memory" in needle:
        assert "grpo.num_generations (G, now 3)" in err
    else:
        assert "train.output_dir" in err


def test_a_real_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import othinklab.trainer

    def bug(cfg, resume=False, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(othinklab.trainer, "train", bug)
    with pytest.raises(ZeroDivisionError):
        main(["train", *FAST, f"train.output_dir={tmp_path}"])


def test_error_messages_are_clamped():
    text = failures.clamp("start " + "x" * 10_000 + " the advice")
    assert len(text) < failures.MAX_MESSAGE + 100 and text.startswith("start") and text.endswith("the advice")
