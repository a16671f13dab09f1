"""Faults provoked for real, across processes where it matters: kills (also mid-save), two trainers on one run
and SIGTERM, NaN/inf steps, failing rewards, corrupt checkpoints, out-of-memory. Nothing the user made is
lost, and each message says what to do."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from othinklab import checkpoint as ckpt_io
from othinklab import failures, runlock
from othinklab.cli import main
from othinklab.config import load_config
from othinklab.errors import TrainingError
from othinklab.grpo import grpo_loss
from othinklab.metrics import read_jsonl, read_metrics, read_rollouts
from othinklab.models import load_model
from othinklab.sampling import sample_groups
from othinklab.trainer import train

SMALL = [
    "grpo.prompts_per_step=2",
    "grpo.num_generations=4",
    "grpo.max_completion_length=40",
    "train.threads=1",
]


def _cfg(tmp_path, *extra):
    return load_config(None, [*SMALL, f"train.output_dir={tmp_path}", *extra])


def _lora_weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters() if p.requires_grad])


def _assert_no_torn_lines(path):
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} line {i + 1} is torn: {line[:80]!r}")


# --------------------------------------------------------------------------- kills
KILLABLE = textwrap.dedent(
    """
    import os, sys, time
    from othinklab import checkpoint
    from othinklab.cli import main

    real = checkpoint._fsync_tree
    def slow_fsync(path):  # the save has written its files into the temporary directory: stall right here
        real(path)
        if os.environ.get("STALL_IN_SAVE"):
            open(os.environ["STALL_IN_SAVE"], "w").close()
            time.sleep(120)
    checkpoint._fsync_tree = slow_fsync
    sys.exit(main(sys.argv[1:]))
    """
)


def _popen(tmp_path, args, stall_marker=None):
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    env = None
    if stall_marker is not None:
        import os

        env = {**os.environ, "STALL_IN_SAVE": str(stall_marker)}
    return subprocess.Popen(
        [sys.executable, str(script), "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )


@pytest.mark.slow
def test_sigkill_mid_save_and_at_random_points_then_resume(tmp_path, base_dir):
    common = [*SMALL, "train.total_steps=6", "train.save_every=1", f"train.output_dir={tmp_path}"]
    want = read_metrics(train(load_config(None, [*common, "train.run_name=straight"]), progress=False).run_dir)
    args = [*common, "train.run_name=killed"]
    run, ckpts = tmp_path / "killed", tmp_path / "killed" / "checkpoints"

    # 1. killed inside a checkpoint save (files written, not yet renamed into place)
    marker = tmp_path / "in-save"
    proc = _popen(tmp_path, args, stall_marker=marker)
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list(ckpts.glob(".step-*"))
    assert partial, "the kill must leave a half-finished save behind"
    assert ckpt_io.latest_checkpoint(ckpts) is None or (ckpt_io.latest_checkpoint(ckpts) / "state.json").exists()
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        _assert_no_torn_lines(run / name)

    # 2. resumed, then killed again at seeded random moments (sometimes mid-step, sometimes mid-save)
    rng = random.Random(0)
    for _ in range(2):
        if len(read_jsonl(run / "metrics.jsonl")) == 6:
            break  # a fast machine may finish the run before a kill lands
        done_before = len(read_jsonl(run / "metrics.jsonl"))
        proc = _popen(tmp_path, ["--resume", *args])
        deadline = time.time() + 300
        while time.time() < deadline and len(read_jsonl(run / "metrics.jsonl")) <= done_before:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read()[-2000:]
        latest = ckpt_io.latest_checkpoint(ckpts)
        ckpt_io.load_state(latest)  # the latest complete checkpoint always loads
        read_metrics(run), read_rollouts(run)  # and the logs always read

    # 3. the final resume finishes the run, cleans the half-saves, and matches the uninterrupted run
    proc = _popen(tmp_path, ["--resume", *args])
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    assert not list(ckpts.glob(".step-*"))
    got = read_metrics(run)
    assert list(got["step"]) == list(range(6))
    for c in [c for c in want.columns if not c.startswith("time/")]:
        assert got[c].tolist() == pytest.approx(want[c].tolist(), rel=1e-6, abs=1e-7), c
    for name in ("metrics.jsonl", "rollouts.jsonl"):
        _assert_no_torn_lines(run / name)


# --------------------------------------------------------------------------- NaN / inf
class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss whose gradient blows up."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _faulty_loss(bad_calls: dict[int, str]):
    """`grpo_loss`, except that the listed calls get a NaN loss or an infinite gradient."""
    real = grpo_loss
    calls = {"n": 0}

    def loss_fn(logp, *args, **kw):
        n = calls["n"]
        calls["n"] += 1
        kind = bad_calls.get(n)
        if kind == "inf-grad":
            logp = _InfGrad.apply(logp)
        loss, stats = real(logp, *args, **kw)
        if kind == "nan-loss":
            loss = loss * float("nan")
        return loss, stats

    return loss_fn


@pytest.mark.slow
def test_nonfinite_steps_are_skipped_and_counted(tmp_path, base_dir):
    loss_fn = _faulty_loss({1: "nan-loss", 2: "inf-grad"})
    snapshots = []
    cfg = _cfg(
        tmp_path,
        "train.total_steps=4",
        "train.max_nonfinite_steps=2",
        "grpo.prompts_per_step=4",
        "grpo.num_generations=8",
    )
    model, processor = load_model(cfg.model)
    res = train(
        cfg,
        progress=False,
        callbacks=[lambda row: snapshots.append(_lora_weights(model))],
        model_and_processor=(model, processor),
        loss_fn=loss_fn,
    )
    m = read_metrics(res.run_dir)
    assert m["skipped/nonfinite"].tolist() == [0, 1, 1, 0]
    assert m["grad/norm"].isna().tolist() == [False, True, True, False] and m["loss/total"].isna()[1]
    assert (m["advantage/abs_mean"] > 0).all()  # every step has a learning signal
    assert not torch.equal(snapshots[0], snapshots[3])  # good steps update
    assert torch.equal(snapshots[0], snapshots[1]) and torch.equal(snapshots[1], snapshots[2])  # bad ones do not
    assert torch.isfinite(snapshots[3]).all()


@pytest.mark.slow
def test_too_many_nonfinite_steps_in_a_row_stop_with_a_clear_message(tmp_path, base_dir):
    loss_fn = _faulty_loss({n: "nan-loss" for n in range(1, 10)})
    cfg = _cfg(tmp_path, "train.total_steps=8", "train.save_every=1", "train.max_nonfinite_steps=2")
    with pytest.raises(TrainingError) as info:  # a UserError: the CLI prints it and exits 2
        train(cfg, progress=False, loss_fn=loss_fn)
    err = str(info.value)
    assert "NaN/inf in 3 steps in a row" in err and "train.max_nonfinite_steps=2" in err
    assert "train.learning_rate" in err
    run = next(tmp_path.glob("counting-*"))
    assert read_metrics(run)["skipped/nonfinite"].tolist() == [0, 1, 1, 1]
    latest = ckpt_io.latest_checkpoint(run / "checkpoints")
    assert f"Last complete checkpoint: {latest}" in err
    state, _ = ckpt_io.load_state(latest)
    assert state["nonfinite_in_a_row"] <= 2  # never a checkpoint taken after the stop


# --------------------------------------------------------------------------- rewards
FLAKY_REWARD = textwrap.dedent(
    """
    from othinklab.rewards import accuracy_reward

    def flaky(completion, solution):
        if len(completion) % 3 == 0:
            raise ValueError("parser choked on " + repr(completion[:10]))
        if len(completion) % 3 == 1:
            return "n/a"
        return accuracy_reward(completion, solution)
    """
)


@pytest.mark.slow
def test_a_failing_reward_function_scores_zero_and_is_logged(tmp_path, base_dir):
    f = tmp_path / "flaky.py"
    f.write_text(FLAKY_REWARD)
    cfg = _cfg(tmp_path, "train.total_steps=2", f"reward.accuracy_function={f}:flaky")
    res = train(cfg, progress=False)
    m, r = read_metrics(res.run_dir), read_rollouts(res.run_dir)
    errors = read_jsonl(res.run_dir / "reward_errors.jsonl")
    assert len(m) == 2  # training went on
    failing = r[r["completion"].str.len() % 3 != 2]
    assert len(failing) > 0 and (failing["reward"] == 0).all() and failing["reward_error"].notna().all()
    assert int(m["reward/errors"].sum()) == len(failing) == len(errors)
    kinds = {e["error"].split(":")[0] for e in errors}
    assert kinds <= {"ValueError", "accuracy function returned 'n/a', not a finite number"}
    assert all(e["completion"] in set(failing["completion"]) for e in errors)
    ok = r[r["completion"].str.len() % 3 == 2]
    assert ok["reward_error"].isna().all()


# --------------------------------------------------------------------------- corrupt checkpoints
@pytest.mark.slow
@pytest.mark.parametrize("victim", ["model/adapter_model.safetensors", "training.pt", "state.json"])
def test_corrupt_checkpoint_names_the_file_and_offers_the_previous(tmp_path, base_dir, capsys, victim):
    args = ["train", *SMALL, f"train.output_dir={tmp_path}", "train.total_steps=4", "train.save_every=2"]
    assert main(args) == 0
    run = next(tmp_path.glob("counting-*"))
    broken = run / "checkpoints" / "step-000004" / victim
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) // 2])
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert victim.split("/")[-1] in err and "step-000002" in err and "Traceback" not in err
    if victim.startswith("model/"):  # evaluation needs only the weights, and names them too
        assert main(["eval", "--run", str(run), "--n", "2", "--samples", "1"]) == 2
        err = capsys.readouterr().err
        assert victim.split("/")[-1] in err and "step-000002" in err
    # following the advice (move the broken one aside) resumes from the previous checkpoint
    shutil.move(str(broken.parent.parent if "/" in victim else broken.parent), str(tmp_path / "broken-step"))
    assert main([*args, "--resume"]) == 0
    assert list(read_metrics(run)["step"]) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- out of memory
@pytest.mark.slow
def test_out_of_memory_names_the_knobs_and_keeps_what_was_made(tmp_path, base_dir):
    real = sample_groups
    calls = {"n": 0}

    def oom_on_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(*a, **kw)

    args = [*SMALL, f"train.output_dir={tmp_path}", "train.total_steps=4", "train.save_every=1"]
    with pytest.raises(TrainingError) as info:  # a UserError: the CLI prints it and exits 2
        train(load_config(None, args), progress=False, sample_fn=oom_on_third)
    err = str(info.value)
    for knob in (
        "grpo.num_generations",
        "grpo.max_completion_length",
        "model.load_in_4bit",
        "model.gradient_checkpointing",
        "model.max_pixels",
    ):
        assert knob in err
    assert "while sampling completions" in err and "step 2" in err
    run = next(tmp_path.glob("counting-*"))
    assert list(read_metrics(run)["step"]) == [0, 1]
    assert ckpt_io.latest_checkpoint(run / "checkpoints").name == "step-000002"
    assert main(["train", *args, "--resume"]) == 0
    assert list(read_metrics(run)["step"]) == [0, 1, 2, 3]


FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]


ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def _wait_for(cond, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert proc.poll() is None, f"the process ended early: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


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
