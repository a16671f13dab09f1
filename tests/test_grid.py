"""SFT baseline runs and the paper's grid (smoke preset): files, shapes, and numbers traced to runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from othinklab.config import load_config
from othinklab.evaluate import cross_task_matrix
from othinklab.metrics import read_metrics
from othinklab.runs import PromptStream


@pytest.mark.parametrize("num_train", [0, 12])
def test_sft_sees_the_same_prompts_as_grpo(num_train):
    cfg = load_config(None, ["grpo.prompts_per_step=4", "sft.batch_size=4", f"task.num_train={num_train}"])
    rl, sft = PromptStream(cfg), PromptStream(cfg, per_batch=cfg.sft.batch_size)
    for i in range(5):
        assert [s.id for s in rl.batch(i)] == [s.id for s in sft.batch(i)]


@pytest.mark.slow
def test_sft_run_layout_and_loss_falls(tmp_path, base_dir):
    from othinklab.sft_run import run_sft

    cfg = load_config(
        None,
        [
            "sft.steps=12",
            "sft.batch_size=8",
            f"train.output_dir={tmp_path}",
            "train.run_name=sft",
            "task.name=geometry",
            "train.threads=1",
            "model.name=tiny-init",
        ],
    )
    res = run_sft(cfg, progress=False)
    m = read_metrics(res.run_dir)
    assert list(m["step"]) == list(range(12))
    assert m["loss/total"].iloc[-4:].mean() < m["loss/total"].iloc[:4].mean()
    assert (res.run_dir / "checkpoints" / "step-000012" / "model" / "adapter_config.json").exists()


@pytest.mark.slow
def test_grid_smoke(tmp_path, base_dir):
    from othinklab.grid import METHODS, PRESETS, cells, run_grid
    from othinklab.grid_report import paper_claims

    paths = run_grid("smoke", output_dir=tmp_path)
    df = pd.read_csv(paths["results"])
    n = PRESETS["smoke"].num_eval
    assert len(df) == len(METHODS) * 2 * 2  # method x train task x eval task (one seed)
    assert set(df["eval_task"]) == {"counting:ood", "geometry:test"} and (df["n"] == n).all()
    # every accuracy is a count over n prompts, inside its own interval
    assert ((df["greedy_accuracy"] * n).round(6) % 1 == 0).all()
    assert ((df["greedy_lo"] <= df["greedy_accuracy"]) & (df["greedy_accuracy"] <= df["greedy_hi"])).all()
    # every trained cell has its run directory with the logs it was computed from
    for run_dir in df.loc[~df["method"].isin(["base", "base_direct"]), "run_dir"]:
        assert (tmp_path / "smoke" / "runs").exists() and read_metrics(run_dir).shape[0] == PRESETS["smoke"].steps
    # the tables are built from results.csv
    same = paths["same_task"].read_text()
    base = df[(df.method == "base") & (df.eval_task == "counting:ood")]["greedy_accuracy"].iloc[0]
    assert f"| base | {100 * base:.1f} [" in same
    matrix = cross_task_matrix(df)
    assert matrix.shape == (len(METHODS) * 2, 2)
    assert paths["figure"].stat().st_size > 1000
    # the base (under both prompts) is one model each, evaluated once; every model on the same prompts
    assert len(list((tmp_path / "smoke" / "cache").glob("*.json"))) == len(cells(PRESETS["smoke"]))
    per = pd.read_csv(paths["per_prompt"])
    assert len(per) == len(cells(PRESETS["smoke"])) * 2 * n
    assert per.groupby(["method", "train_task", "seed", "eval_task"])["id"].apply(tuple).nunique() == 2
    # claims: paired differences with intervals and verdicts, labelled as plumbing
    claims = pd.read_csv(paths["claims"])
    assert set(claims["metric"]) == {"greedy", "sampled"} and len(claims) == 2 * len(paper_claims())
    assert set(claims["verdict"]) <= {"holds", "reversed", "not separable"}
    assert ((claims["lo"] <= claims["diff"] + 1e-9) & (claims["diff"] <= claims["hi"] + 1e-9)).all()
    assert "plumbing only" in paths["claims_md"].read_text()
    prov = json.loads(paths["provenance"].read_text())
    assert prov["command"] == "othinklab grid --preset smoke" and prov["wall_seconds"] > 0
    assert {"torch", "transformers", "peft"} <= set(prov["versions"]) and len(prov["commit"]) == 40
    # a re-run skips finished cells and reproduces the same results
    cached = sorted(p.name for p in (tmp_path / "smoke" / "cache").glob("*.json"))
    again = run_grid("smoke", output_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "smoke" / "cache").glob("*.json")) == cached
    pd.testing.assert_frame_equal(pd.read_csv(again["results"]), df)
    assert all(json.loads((tmp_path / "smoke" / "cache" / c).read_text()) for c in cached)
