"""The run lock: one writer per run (a second is refused naming the holder; a killed holder's lock is taken
over) and hostile paths (issue 27 class 1): a `.lock` that is a symlink (to a file outside, or dangling), a
directory, a FIFO or on a read-only location is refused with exit 2 and one paragraph, and nothing outside
the run is truncated or created. The lock is taken at one site (`train()`/`run_sft()`)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from othinklab import runlock
from othinklab.cli import main

FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]
SFT = ["sft.steps=1", "sft.batch_size=2", "model.name=tiny-init"]


def _args(command: str, tmp: Path) -> list[str]:
    extra = FAST if command == "train" else SFT
    return [command, *extra, "train.total_steps=1", f"train.output_dir={tmp / 'runs'}", "train.run_name=r"]


@pytest.mark.parametrize("command", ["train", "sft"])
def test_a_symlinked_lock_leaves_its_target_untouched(tmp_path, capsys, command):
    outside = tmp_path / "precious.txt"
    outside.write_text("user data")
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(outside)
    assert main(_args(command, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and "Traceback" not in err, err
    assert outside.read_text() == "user data"
    assert (run / ".lock").is_symlink()  # left as it was; nothing else written in the run
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_dangling_lock_link_creates_nothing(tmp_path, capsys):
    target = tmp_path / "elsewhere" / "created-by-othinklab"
    target.parent.mkdir()
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(target)
    assert main(["train", "--resume", *_args("train", tmp_path)[1:]]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert not target.exists() and list(target.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_that_is_not_a_file_gets_one_paragraph(tmp_path, capsys, kind):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    if kind == "directory":
        (run / ".lock").mkdir()
    else:
        os.mkfifo(run / ".lock")
    assert main(_args("train", tmp_path)) == 2
    err = capsys.readouterr().err
    assert "run lock" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_read_only_location_gets_one_paragraph(tmp_path, capsys, monkeypatch):
    class ReadOnly:  # what filelock raises on a read-only mount (tests run as root, so chmod cannot provoke it)
        def __init__(self, *args, **kwargs):
            pass

        def acquire(self):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(runlock, "FileLock", ReadOnly)
    assert main(_args("train", tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "not read-only" in err and "Traceback" not in err, err


def test_sft_takes_the_lock_itself(tmp_path):
    """One lock site: `run_sft` (not only the CLI) refuses a second writer, naming the holder."""
    from othinklab.config import load_config
    from othinklab.runs import run_dir_for
    from othinklab.sft_run import run_sft

    cfg = load_config(None, _args("sft", tmp_path)[1:])
    code = f"from othinklab import runlock; runlock.acquire({str(run_dir_for(cfg))!r}, 'holder'); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunLockedError, match=f"pid {holder.pid} on host .*holder"):
            run_sft(cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()


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
