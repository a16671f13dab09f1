"""Hardening provoked for real: one writer per run (two trainers, a killed holder), SIGTERM names the last
checkpoint and the exact --resume line, the final checkpoint whatever num_iterations, never a checkpoint
from NaN weights, checkpoints without pickled code, RNG state as plain values, out-of-memory and disk-full
advice, third-party noise only with --verbose."""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from othinklab import checkpoint as ckpt_io
from othinklab import failures, runlock
from othinklab.cli import _quiet, main
from othinklab.config import load_config
from othinklab.errors import TrainingError, UserError
from othinklab.rng import rng_state, set_rng_state

FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def _wait_for(cond, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert proc.poll() is None, f"the process ended early: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


# --------------------------------------------------------------------------- one writer per run
def _hold_in_child(run: Path) -> subprocess.Popen:
    code = f"from othinklab import runlock; runlock.acquire({str(run)!r}, 'test'); print('held', flush=True); input()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "r"
    holder = _hold_in_child(run)
    try:
        with pytest.raises(runlock.RunLockedError, match=f"pid {holder.pid} on host"):
            runlock.acquire(run)
        assert runlock.read_holder(run)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    capsys.readouterr()
    with runlock.hold(run, "train"):  # the holder died by SIGKILL: its lock is taken over, with a note
        assert runlock.read_holder(run)["pid"] == os.getpid()
        with runlock.hold(run):  # nested in one process: free
            pass
        assert runlock.read_holder(run)["pid"] == os.getpid()  # the nested exit did not release it
    assert f"left by pid {holder.pid}" in capsys.readouterr().err
    assert runlock.read_holder(run) is None


@pytest.mark.slow
def test_two_trainers_on_one_run_directory_then_sigterm_names_the_checkpoint_and_resume_line(tmp_path, capsys):
    overrides = [
        *FAST,
        "train.total_steps=500",
        "train.save_every=1",
        f"train.output_dir={tmp_path}",
        "train.run_name=r",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "othinklab.cli", "train", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    run = tmp_path / "r"
    try:
        _wait_for(lambda: ckpt_io.latest_checkpoint(run / "checkpoints") is not None, first)
        metrics_before = (run / "metrics.jsonl").read_bytes()
        # A second trainer (and a --resume) on the same directory: exit 2 naming the running one.
        for extra in ([], ["--resume"]):
            assert main(["train", *extra, *overrides]) == 2
            err = capsys.readouterr().err
            assert f"is in use by pid {first.pid}" in err and "Traceback" not in err, err
        assert (run / "metrics.jsonl").read_bytes().startswith(metrics_before)  # its log was not touched
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    latest = ckpt_io.latest_checkpoint(run / "checkpoints")
    assert f"the last complete checkpoint is {str(latest)!r}" in err
    assert failures.resume_command(None, overrides) in err
    assert runlock.read_holder(run) is None  # released on the way out
    ckpt_io.load_state(latest)  # and it loads


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_the_final_checkpoint_is_written_whatever_num_iterations(tmp_path, capsys):
    args = [*FAST, "train.total_steps=3", "grpo.num_iterations=2", "train.save_every=0"]
    assert main(["train", *args, f"train.output_dir={tmp_path}", "train.run_name=r"]) == 0
    latest = ckpt_io.latest_checkpoint(tmp_path / "r" / "checkpoints")
    assert latest is not None and latest.name == "step-000003"
    assert ckpt_io.load_state(latest)[0]["step"] == 3
    # resuming the finished run does nothing more and succeeds
    assert main(["train", "--resume", *args, f"train.output_dir={tmp_path}", "train.run_name=r"]) == 0


@pytest.mark.slow
def test_no_checkpoint_is_written_from_nonfinite_weights(tmp_path):
    from othinklab.trainer import train

    cfg = load_config(None, [*FAST, "train.total_steps=3", "train.save_every=1", f"train.output_dir={tmp_path}"])
    holder = {}

    def poison(row):
        if row["step"] == 1:  # after step 1's update, before its checkpoint
            model = holder["model"]
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    from othinklab.models import load_model

    holder["model"], processor = load_model(cfg.model)
    with pytest.raises(TrainingError) as info:
        train(cfg, callbacks=[poison], progress=False, model_and_processor=(holder["model"], processor))
    ckpts = tmp_path / f"{cfg.task.name}-{cfg.kl.schedule}-seed0" / "checkpoints"
    assert [p.name for p in ckpt_io.complete_checkpoints(ckpts)] == ["step-000001"]
    assert "hold NaN/inf" in str(info.value) and str(ckpts / "step-000001") in str(info.value)


def test_rng_state_is_plain_and_round_trips_through_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _checkpoint_dir(root: Path, step: int, training: dict) -> Path:
    ckpt = root / f"step-{step:06d}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(f'{{"step": {step}}}')
    torch.save(training, ckpt / "training.pt")
    return ckpt


class _Marker:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "ran"
    ckpt = _checkpoint_dir(tmp_path / "c", 2, {"optimizer": _Marker(marker), "scheduler": {}, "rng": {}})
    _checkpoint_dir(tmp_path / "c", 1, {"optimizer": {}, "scheduler": {}, "rng": {}})
    with pytest.raises(UserError, match=r"\(io.open\).*refuses.*previous checkpoint .*step-000001"):
        ckpt_io.load_state(ckpt)
    assert not marker.exists()


def test_the_latest_pointer_stays_inside_the_checkpoint_directory(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    good = _checkpoint_dir(root, 1, {})
    outside = _checkpoint_dir(tmp_path / "elsewhere", 7, {})
    for pointer in ("../../elsewhere/step-000007", str(outside), "step-000001/../../../elsewhere/step-000007", ""):
        (root / "latest").write_text(pointer)
        assert ckpt_io.latest_checkpoint(root) == good
    (root / "step-000009").symlink_to(outside, target_is_directory=True)
    (root / "latest").write_text("step-000009")
    assert ckpt_io.latest_checkpoint(root) == good  # a symlinked step is not one of this run's


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


def test_third_party_warnings_only_with_verbose():
    for verbose, shown in ((False, 0), (True, 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with _quiet(verbose):
                warnings.warn("`foo` is deprecated and will be removed", FutureWarning, stacklevel=1)
        assert len(seen) == shown


def test_error_messages_are_clamped():
    text = failures.clamp("start " + "x" * 10_000 + " the advice")
    assert len(text) < failures.MAX_MESSAGE + 100 and text.startswith("start") and text.endswith("the advice")
