"""Hostile state left on disk (issue 27, classes 5 and 9): grid caches in an older format, truncated or
missing; a cell's run directory locked by another process; data files that are devices, FIFOs or links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from othinklab import grid
from othinklab.errors import UserError
from othinklab.grid_report import load_cells, read_cell, read_json_cache


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


BAD_CACHES = {
    "older format (no per_prompt)": lambda p: p.write_text(json.dumps({"rows": [{"method": "grpo_d"}]})),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "not JSON": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "a list": lambda p: p.write_text("[]"),
    "no rows": lambda p: p.write_text(json.dumps({"rows": [], "per_prompt": {}})),
}


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


# --------------------------------------------------------------------------- class 9: data files that never end
def _hostile_data(tmp: Path, kind: str) -> Path:
    path = tmp / "data.jsonl"
    if kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink to a FIFO":
        os.mkfifo(tmp / "fifo")
        path.symlink_to(tmp / "fifo")
    elif kind == "/dev/urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "directory named .jsonl":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind", ["symlink to /dev/zero", "FIFO", "symlink to a FIFO", "/dev/urandom", "directory named .jsonl"]
)
def test_a_data_file_that_is_not_a_regular_file_is_refused_at_once(kind, tmp_path):
    """Class 9: a JSONL that is a link to /dev/zero looped at 100% CPU; a FIFO blocked forever."""
    from othinklab.tasks import load_r1v

    path = _hostile_data(tmp_path, kind)
    start = time.perf_counter()
    with pytest.raises(UserError, match="data.jsonl"):
        load_r1v(path, "counting")
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------- class 9/11: resume reads only the tail
def test_resume_truncation_reads_only_the_tail_and_survives_malformed_rows(tmp_path, monkeypatch):
    """Class 9: a resume parsed all of a 770 MB rollouts.jsonl (4.96 GB); class 11: a malformed row
    (`[1]`, a string step) raised a traceback on resume."""
    from othinklab import metrics

    path = tmp_path / "rollouts.jsonl"
    head = "".join(json.dumps({"step": i // 100, "text": "x" * 200}) + "\n" for i in range(20_000))
    tail = '[1]\n{"step": "x"}\n"text"\n' + "".join(json.dumps({"step": 200 + i}) + "\n" for i in range(5))
    path.write_text(head + '{"step": 199}\n' + tail + '{"step": 205, "torn"')
    parsed: list[int] = []
    real = json.loads
    monkeypatch.setattr(metrics.json, "loads", lambda b, *a, **k: parsed.append(len(b)) or real(b, *a, **k))
    kept = metrics.truncate_from_step(path, 200)
    assert kept == 20_001 and path.read_text() == head + '{"step": 199}\n'
    assert len(parsed) < 20  # only the tail's rows were parsed, not 20,000


@pytest.mark.parametrize("image", ["/proc/self/mem", "/proc/self/environ", "/dev/zero", "/proc/kcore", "/dev/stdin"])
def test_proc_and_device_paths_as_images_are_a_named_row_error(image, tmp_path):
    """Class 11: `/proc` paths as images gave a traceback (EIO on read) or read without end."""
    from othinklab.tasks import load_r1v

    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"image_path": image, "problem": "How many?", "solution": "<answer> 3 </answer>"}) + "\n"
    )
    with pytest.raises(UserError, match=r"d\.jsonl row 0"):
        load_r1v(path, "counting")


def test_a_local_path_without_its_suffix_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """Class 12: `data/train` beside `data/train.jsonl` was looked up on the hub as a dataset id."""
    from othinklab.tasks import hub, load_r1v

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    monkeypatch.setattr(hub, "load_hub_dataset", lambda spec: pytest.fail(f"sent {spec} to the hub"))
    with pytest.raises(UserError, match=r"did you mean 'data/train.jsonl'\?"):
        load_r1v("data/train", "counting")
    with pytest.raises(UserError, match="does not exist"):
        load_r1v("data/valid", "counting")  # a local folder's file, not the hub dataset `data/valid`


# --------------------------------------------------------------------------- class 9: reward code that hangs or exits
def _reward_file(tmp: Path, body: str) -> str:
    path = tmp / "my_reward.py"
    path.write_text("import sys, time\n" + body)
    return f"{path}:acc"


def test_a_reward_that_never_returns_scores_0_and_then_stops_the_run(tmp_path, monkeypatch):
    from othinklab import rewards
    from othinklab.errors import TrainingError

    fn = rewards.load_reward_function(
        _reward_file(tmp_path, "def acc(c, s):\n    if c == 'ok':\n        return 1.0\n    time.sleep(30)\n"),
        timeout_s=0.05,
    )
    breakdown, error = rewards.safe_score("hang", "<answer> 3 </answer>", accuracy_fn=fn)
    assert breakdown.total == 0.0 and "reward.timeout_s=0.05" in error
    assert rewards.safe_score("ok", "x", format_weight=0.0, accuracy_fn=fn)[0].accuracy == 1.0  # resets the count
    with pytest.raises(TrainingError, match="in a row"):
        for _ in range(rewards.MAX_TIMEOUTS_IN_A_ROW):
            rewards.safe_score("hang", "x", accuracy_fn=fn)


@pytest.mark.parametrize("body", ["sys.exit(0)", "raise SystemExit(3)", "raise GeneratorExit()"])
def test_sys_exit_inside_a_reward_is_a_reward_error_not_a_successful_exit(body, tmp_path):
    from othinklab import rewards

    fn = rewards.load_reward_function(_reward_file(tmp_path, f"def acc(c, s):\n    {body}\n"), timeout_s=5)
    breakdown, error = rewards.safe_score("x", "y", accuracy_fn=fn)
    assert breakdown.total == 0.0 and "raised inside the reward function" in error


def test_sys_exit_while_importing_a_reward_module_is_a_config_error(tmp_path):
    from othinklab import rewards
    from othinklab.errors import ConfigError

    with pytest.raises(ConfigError, match="SystemExit"):
        rewards.load_reward_function(_reward_file(tmp_path, "sys.exit(0)\ndef acc(c, s):\n    return 1\n"))


@pytest.mark.slow
def test_a_hanging_reward_ends_a_real_training_run_with_exit_2(tmp_path, capsys):
    """The whole path: `othinklab train` with a reward that sleeps stops with one paragraph, exit 2."""
    from othinklab.cli import main

    spec = _reward_file(tmp_path, "def acc(c, s):\n    time.sleep(5)\n")
    args = ["train", "model.name=tiny-init", f"train.output_dir={tmp_path}", "train.run_name=r", "train.threads=1",
            "grpo.prompts_per_step=4", "grpo.num_generations=2", "grpo.max_completion_length=4", "task.num_eval=2",
            "train.total_steps=1", f"reward.accuracy_function={spec}", "reward.timeout_s=0.01"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "did not return within reward.timeout_s=0.01" in err and "Traceback" not in err


# --------------------------------------------------------------------------- class 12: warnings scoped to the command
def _warn_like(module: str) -> None:
    warnings.warn_explicit("use_reentrant should be passed explicitly", UserWarning, f"{module}/x.py", 1, module=module)


@pytest.mark.parametrize("module", ["torch.utils.checkpoint", "numpy", "PIL.Image", "tensorboard", "transformers"])
def test_third_party_warnings_are_silenced_only_inside_the_command(module, capsys, monkeypatch):
    """Class 12: torch's use_reentrant, numpy, PIL and tensorboard warnings reached stderr without --verbose,
    and `cli._quiet()` installed a process-wide filter that silenced warnings for every later test."""
    from othinklab import cli

    def command(args):
        _warn_like(module)
        _warn_like("othinklab.trainer")  # othinklab's own warnings still show
        return 0

    monkeypatch.setattr(cli, "cmd_estimate", command)
    for argv, shown in ((["estimate"], {"othinklab.trainer/x.py"}), (["--verbose", "estimate"], None)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            before = list(warnings.filters)
            assert cli.main(argv) == 0
            assert warnings.filters == before  # scoped: nothing leaks past the command
        got = {w.filename for w in seen}
        assert got == (shown or {f"{module}/x.py", "othinklab.trainer/x.py"})


# --------------------------------------------------------------------------- class 9: images decoded lazily
def test_dataset_images_are_not_kept_decoded(tmp_path):
    """Class 9: 100k rows were decoded up front (5.75 GB at 112 px). Rows are still checked at load (a bad
    image is a row error at once) but a sample keeps only its source; `Sample.image` is a PIL image on access."""
    import tracemalloc

    from PIL import Image

    from othinklab.tasks import load_r1v
    from othinklab.tasks.base import LazyImage, image_source, with_prompt

    Image.new("RGB", (448, 448), (200, 10, 10)).save(tmp_path / "img.png")  # tiny PNG, 600 KB decoded
    row = {"image_path": "img.png", "problem": "How many?", "solution": "<answer> 3 </answer>"}
    (tmp_path / "d.jsonl").write_text((json.dumps(row) + "\n") * 300)
    tracemalloc.start()
    samples = load_r1v(tmp_path / "d.jsonl", "counting")
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 20_000_000, f"{held / 1e6:.0f} MB held for 300 samples (decoded would be 180 MB)"
    assert all(isinstance(image_source(s), LazyImage) for s in samples)
    assert isinstance(samples[0].image, Image.Image) and samples[0].image.size == (448, 448)
    assert isinstance(image_source(with_prompt(samples, "direct")[0]), LazyImage)  # copies stay lazy
    (tmp_path / "img.png").write_bytes(b"gone")  # changed after loading: a DataError naming the row
    with pytest.raises(UserError, match=r"d\.jsonl row 0"):
        _ = samples[0].image


@pytest.mark.parametrize("damage", list(BAD_CACHES))
def test_a_damaged_ablation_kl_cache_is_remeasured(damage, tmp_path, monkeypatch):
    """Class 5: the ablations' KL cache (`<out>/kl/<run>.json`) gave a traceback when truncated."""
    import pandas as pd

    from othinklab import mechanism

    run = tmp_path / "runs" / "grpo_d-counting-seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("kl: {}\n")
    results = pd.DataFrame([{"method": "grpo_d", "train_task": "counting", "seed": 0, "run_dir": str(run), "n": 2}])
    measured: list[str] = []
    monkeypatch.setattr(mechanism, "load_trained", lambda r: measured.append(str(r)) or (None, None))
    monkeypatch.setattr(mechanism, "kl_to_base", lambda *a, **k: {"kl_k3": 0.5})
    first = mechanism.measure_runs(tmp_path, results, kl_prompts=1)
    cache = tmp_path / "kl" / f"{run.name}.json"
    assert len(measured) == 1 and cache.exists()
    BAD_CACHES[damage](cache)
    again = mechanism.measure_runs(tmp_path, results, kl_prompts=1)
    assert len(measured) == 2  # remeasured, not a traceback and not a silently dropped run
    pd.testing.assert_frame_equal(first, again)
    assert read_json_cache(cache)["kl"]
