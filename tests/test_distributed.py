"""Data parallelism for real: `torchrun` with 2 CPU processes on gloo gives the 1-process run, resume included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from othinklab.config import load_config
from othinklab.distributed import Dist
from othinklab.errors import UserError
from othinklab.metrics import read_jsonl, read_metrics, read_rollouts
from othinklab.trainer import train

COMMON = [
    "grpo.prompts_per_step=4",
    "grpo.num_generations=4",
    "grpo.max_completion_length=24",
    "train.total_steps=4",
    "train.save_every=2",
    "train.threads=1",
]


def test_shard_keeps_whole_groups_and_rank_order():
    items = list(range(8))
    assert [Dist(rank=r, world=2).shard(items) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(UserError, match="divisible by the number of processes"):
        Dist(rank=0, world=3).shard(items)


def _torchrun(nproc: int, args: list[str], **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "othinklab.cli", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_two_processes_on_gloo_equal_one_process_with_kill_and_resume(tmp_path, base_dir):
    one = train(load_config(None, [*COMMON, f"train.output_dir={tmp_path}", "train.run_name=one"]), progress=False)
    want, want_rollouts = read_metrics(one.run_dir), read_rollouts(one.run_dir)

    args = [*COMMON, f"train.output_dir={tmp_path}", "train.run_name=two"]
    run = tmp_path / "two"
    # 2 ranks, killed (the whole process group, SIGKILL) once step 2's checkpoint exists and step 3 has begun
    proc = _torchrun(2, args, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(read_jsonl(run / "metrics.jsonl")) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= len(read_jsonl(run / "metrics.jsonl")) < 4, proc.stdout.read()[-3000:]
    assert (run / "checkpoints" / "step-000002" / "state.json").exists()

    resumed = _torchrun(2, ["--resume", *args])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    got, got_rollouts = read_metrics(run), read_rollouts(run)
    assert list(got["step"]) == [0, 1, 2, 3]
    for c in [c for c in want.columns if not c.startswith("time/")]:
        assert got[c].tolist() == pytest.approx(want[c].tolist(), rel=1e-4, abs=1e-5), c
    # the same completions, in the same order, written once (by rank 0)
    assert got_rollouts["completion"].tolist() == want_rollouts["completion"].tolist()
    assert got_rollouts["group"].tolist() == want_rollouts["group"].tolist()
    assert got_rollouts["advantage"].tolist() == pytest.approx(want_rollouts["advantage"].tolist(), abs=1e-5)
