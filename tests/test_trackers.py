"""Trackers (`train.report_to`): rows written to each tracker and read back from its own store, offline; a
short run with tensorboard and `train.eval_every`; a missing tracker fails before any file is written."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from othinklab.config import load_config
from othinklab.errors import UserError
from othinklab.metrics import METRICS, read_jsonl
from othinklab.trackers import TRL_NAMES, Trackers, check_installed, tracker_key, tracker_scalars
from othinklab.trainer import train

ROWS = [
    {"step": 0, "reward/total": 0.5, "kl/beta": 0.04, "kl/value": 0.0, "lr": 1e-4, "grad/norm": float("nan")},
    {"step": 1, "reward/total": 0.75, "kl/beta": 0.05, "kl/value": 0.01, "lr": 1e-4, "eval/greedy_accuracy": 0.25},
]
CONFIG = {"train": {"total_steps": 2, "report_to": ["tensorboard"]}, "kl": {"schedule": "grpo_d"}}


def test_tracker_keys_follow_trl():
    assert tracker_key("reward/total") == "train/reward"
    assert tracker_key("kl/value") == "train/kl"
    assert tracker_key("completion/truncated") == "train/completions/clipped_ratio"
    assert tracker_key("kl/beta") == "train/beta"
    assert tracker_key("loss/kl") == "train/loss_kl"
    assert tracker_key("eval/sampled_accuracy") == "eval/sampled_accuracy"
    # every mapped name is a real metric name
    from othinklab.metrics import METRICS

    assert set(TRL_NAMES) <= set(METRICS)
    # no key is a folder of another (MLflow's file store writes each key as a file path)
    keys = {tracker_key(m) for m in METRICS if m != "step"}
    assert len(keys) == len(METRICS) - 1
    assert not [(a, b) for a in keys for b in keys if b.startswith(a + "/")]
    s = tracker_scalars({"step": 3, "reward/total": 1, "grad/norm": float("inf"), "x": None, "flag": True})
    assert s == {"train/reward": 1.0}


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(UserError, match=r"othinklab\[wandb\]"):
        check_installed(("wandb",))
    assert check_installed(("none",)) == []


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = Trackers(["tensorboard"], tmp_path, "run", CONFIG)
    for row in ROWS:
        t.log(row)
    t.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/reward", "train/beta", "train/kl", "train/learning_rate", "eval/greedy_accuracy"} <= tags
    assert "train/grad_norm" not in tags  # the only value was NaN: not logged
    rewards = [(e.step, e.value) for e in acc.Scalars("train/reward")]
    assert rewards == [(0, 0.5), (1, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("eval/greedy_accuracy")] == [(1, 0.25)]


TRACKIO_SCRIPT = """
import sys
from othinklab.trackers import Trackers
from trackio.sqlite_storage import SQLiteStorage
t = Trackers(["trackio"], sys.argv[1], "run-a", {"train": {"total_steps": 2}})
t.log({"step": 0, "reward/total": 0.5, "kl/beta": 0.04})
t.log({"step": 1, "reward/total": 0.75, "kl/beta": 0.05})
t.close()
logs = SQLiteStorage.get_logs(project="othinklab-test", run="run-a")
print([(r["step"], r["train/reward"], r["train/beta"]) for r in logs])
"""


def test_trackio_offline(tmp_path):
    """trackio reads TRACKIO_DIR at import, so it runs in a fresh process with its store under tmp_path."""
    pytest.importorskip("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    env["TRACKIO_PROJECT"] = "othinklab-test"
    proc = subprocess.run(
        [sys.executable, "-c", TRACKIO_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[(0, 0.5, 0.04), (1, 0.75, 0.05)]"
    assert list((tmp_path / "trackio").glob("othinklab-test*"))


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = Trackers(["wandb"], tmp_path, "run-w", CONFIG)
    for row in ROWS:
        t.log(row)
    t.close()
    (record,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # wandb ships no reader for offline files; the keys and values are in it as text
    assert b"train/reward" in data and b"0.75" in data and b"eval/greedy_accuracy" in data


def test_mlflow_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 deprecates, but still writes, a file store
    t = Trackers(["mlflow"], tmp_path, "run-m", CONFIG)
    run_id = t.active["mlflow"].tracker.info.run_id
    for row in ROWS:
        t.log(row)
    t.close()
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/reward")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75)]


def test_failing_tracker_is_dropped_not_fatal(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    t = Trackers(["tensorboard"], tmp_path, "run", CONFIG)
    t.active["tensorboard"].writer.close()

    def boom(*a, **k):
        raise OSError("disk gone")

    t.active["tensorboard"].log = boom
    t.log(ROWS[0])
    assert t.active == {}
    assert "dropped" in caplog.text
    t.close()


SMALL = [
    "model.name=tiny-init",  # the untrained tiny model: this checks plumbing, not learning
    "grpo.prompts_per_step=2",
    "grpo.num_generations=2",
    "grpo.max_completion_length=8",
    "task.num_eval=4",
    "eval.num_samples=2",
    "eval.max_new_tokens=8",
    "train.threads=1",
    "train.total_steps=4",
    "train.log_rollouts=false",
]


@pytest.mark.slow
def test_tensorboard_and_eval_every(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(
        None,
        [
            *SMALL,
            f"train.output_dir={tmp_path}",
            "train.run_name=eco",
            "train.report_to=tensorboard",
            "train.eval_every=2",
            "train.eval_prompts=3",
        ],
    )
    run = train(cfg, progress=False).run_dir
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    evaluated = [r["step"] for r in rows if "eval/greedy_accuracy" in r]
    assert evaluated == [1, 3]  # after the 2nd and 4th updates
    for r in rows:
        assert set(r) <= set(METRICS), set(r) - set(METRICS)
        if "eval/n" in r:
            assert r["eval/n"] == 3 and 0 <= r["eval/greedy_accuracy"] <= 1 and 0 <= r["eval/sampled_accuracy"] <= 1
            assert r["eval/greedy_accuracy_lo"] <= r["eval/greedy_accuracy"] <= r["eval/greedy_accuracy_hi"]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/kl")] == [0, 1, 2, 3]
    assert [e.value for e in acc.Scalars("train/kl")] == pytest.approx([r["kl/value"] for r in rows], rel=1e-5)
    assert [e.value for e in acc.Scalars("train/completions/mean_length")] == pytest.approx(
        [r["completion/length"] for r in rows], rel=1e-5
    )
    assert [e.step for e in acc.Scalars("eval/greedy_accuracy")] == [1, 3]
    assert [e.value for e in acc.Scalars("train/beta")] == pytest.approx([r["kl/beta"] for r in rows])

    # the evaluations draw from their own generator: the training metrics are those of a run without them
    plain = train(load_config(None, [*SMALL, f"train.output_dir={tmp_path}", "train.run_name=plain"]), progress=False)
    keys = ("reward/total", "kl/value", "loss/total", "completion/length")
    assert [[r[k] for k in keys] for r in read_jsonl(plain.run_dir / "metrics.jsonl")] == [
        [r[k] for k in keys] for r in rows
    ]


def test_missing_tracker_fails_before_any_file(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    cfg = load_config(None, [*SMALL, f"train.output_dir={tmp_path}", "train.report_to=mlflow"])
    with pytest.raises(UserError, match=r"othinklab\[mlflow\]"):
        train(cfg, progress=False)
    assert not list(tmp_path.iterdir())
