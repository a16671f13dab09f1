"""SFT baseline runs and the paper's grid (smoke preset): files, shapes, and numbers traced to runs; damaged or
missing cell caches recomputed or named (never dropped); a cell's run directory held by another process is
never deleted."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from cache_damage import BAD_CACHES

from othinklab import grid
from othinklab.config import load_config
from othinklab.errors import UserError
from othinklab.evaluate import cross_task_matrix
from othinklab.grid_report import load_cells, read_cell
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


def _fake_cell(preset, method, task, seed, output_dir, progress):
    """A valid cell cache without training: one summary row per eval task and per-prompt results."""
    listed = "none" if method.trainer == "none" else task
    row = {"method": method.name, "train_task": listed, "seed": seed, "prompt": method.prompt, "n": 2}
    evals = [f"{t}:{s}" for t, s in grid.EVAL_TASKS.items()]
    rows = [{**row, "eval_task": ev, "greedy_accuracy": 0.5, "sampled_accuracy": 0.5} for ev in evals]
    per = {ev: {"ids": ["a", "b"], "greedy": [1.0, 0.0], "sampled": [0.5, 0.5]} for ev in evals}
    return {"rows": rows, "per_prompt": per}


@pytest.fixture
def fake_grid(monkeypatch):
    """run_grid with cells computed by `_fake_cell` (recording which) and the reports reduced to load_cells."""
    calls: list[tuple[str, str, int]] = []

    def cell(preset, method, task, seed, output_dir, progress):
        calls.append((method.name, task, seed))
        return _fake_cell(preset, method, task, seed, output_dir, progress)

    def reports(out, claims, keys=None, preset=""):
        rows, _ = load_cells(out, keys)
        return {"rows": rows}

    monkeypatch.setattr(grid, "_cell", cell)
    monkeypatch.setattr(grid, "write_reports", reports)
    monkeypatch.setattr("othinklab.provenance.write_provenance", lambda path, **kw: path)
    monkeypatch.setattr("othinklab.warmup.ensure_base", lambda **kw: None)
    return calls


@pytest.mark.parametrize("damage", list(BAD_CACHES))
def test_a_damaged_cache_is_recomputed_and_no_cell_is_dropped(damage, fake_grid, tmp_path, capsys):
    """Class 5: an older-format or truncated cache once counted as cached, then the report skipped it (cells
    and claims, GRPO-D on counting included, vanished with exit 0) or raised a traceback."""
    out = grid.run_grid("smoke", output_dir=tmp_path)
    n_cells = len(grid.cells(grid.PRESETS["smoke"]))
    assert len(fake_grid) == n_cells and len(out["rows"]) == 2 * n_cells
    cache = tmp_path / "smoke" / "cache"
    preset = grid.PRESETS["smoke"]
    method = next(m for m in preset.methods if m.name == "grpo_d")
    key = grid.cell_key(preset, method, grid.cell_config(preset, method, "counting", 0, tmp_path / "smoke"))
    BAD_CACHES[damage](cache / f"{key}.json")
    assert read_cell(cache / f"{key}.json")[1]
    with pytest.raises(UserError, match=key):  # a report over the damaged cache names the file, never skips it
        load_cells(tmp_path / "smoke")
    fake_grid.clear()
    out = grid.run_grid("smoke", output_dir=tmp_path)
    assert fake_grid == [("grpo_d", "counting", 0)]  # only the damaged cell, recomputed
    assert "recomputing" in capsys.readouterr().out
    rows = out["rows"]
    assert len(rows) == 2 * n_cells and ((rows["method"] == "grpo_d") & (rows["train_task"] == "counting")).any()
    assert read_cell(cache / f"{key}.json")[1] is None


def test_a_report_over_a_missing_cell_fails_naming_it(fake_grid, tmp_path):
    grid.run_grid("smoke", output_dir=tmp_path)
    files = sorted((tmp_path / "smoke" / "cache").glob("*.json"))
    keys = {f.stem for f in files}
    files[0].unlink()
    with pytest.raises(UserError, match=files[0].stem):
        load_cells(tmp_path / "smoke", keys)


def test_the_grid_never_deletes_a_run_directory_another_process_holds(tmp_path):
    """Class 5: the grid removed a cell's run directory, lock included, while another process held it."""
    preset = grid.PRESETS["smoke"]
    method = next(m for m in preset.methods if m.trainer == "grpo")
    from othinklab.runs import run_dir_for

    run_dir = run_dir_for(grid.cell_config(preset, method, "counting", 0, tmp_path))
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 0}\n')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from othinklab import runlock; runlock.acquire(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="in use by pid"):
            grid._cell(preset, method, "counting", 0, tmp_path, False)
        assert (run_dir / "metrics.jsonl").read_text() == '{"step": 0}\n' and (run_dir / ".lock").exists()
    finally:
        holder.kill()
        holder.wait()
    # once free, the cell's directory is emptied (its lock file kept) before it is redone
    from othinklab import runlock

    with runlock.hold(run_dir, "test"):
        grid._clear_run_dir(run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]
