"""The CLI: user errors exit 2 with one paragraph naming what is wrong (no traceback); the demo runs;
third-party warnings only with --verbose."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from othinklab.cli import _quiet, main


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "othinklab.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_user_error_exits_2_without_traceback_across_the_process_boundary(tmp_path):
    """The in-process cases live in test_e2e_bad_inputs.py; this one checks the real exit code and stderr."""
    f = tmp_path / "c.yaml"
    f.write_text("kl:\n  shedule: grpo_d\n")
    res = _run("train", "--config", str(f), f"train.output_dir={tmp_path / 'runs'}")
    assert res.returncode == 2, res.stderr[-1500:]
    assert "did you mean 'schedule'" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file_exit_2(capsys):
    assert main(["train", "--config", "/no/such.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resume_without_run_is_a_user_error(tmp_path, capsys):
    assert main(["train", "--resume", f"train.output_dir={tmp_path}"]) == 2
    assert "no config.yaml to resume from" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end_short(tmp_path, base_dir):
    res = _run("demo", "--steps", "3", "--num-eval", "8", "--output-dir", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    assert "before" in out and "after" in out and "95%" in out and "n=8 prompts" in out
    run = tmp_path / "runs" / "demo-counting-grpo_d-seed0"
    assert (run / "metrics.jsonl").exists() and (run / "training_curves.png").stat().st_size > 1000
    # a second demo never overwrites the first
    res2 = _run("demo", "--steps", "1", "--num-eval", "4", "--output-dir", str(tmp_path / "runs"))
    assert res2.returncode == 0 and (tmp_path / "runs" / "demo-counting-grpo_d-seed0-2").is_dir()
    # the other task: its own run, its own eval split, the paper's geometry schedule
    res3 = _run("demo", "--task", "geometry", "--steps", "1", "--num-eval", "4", "--output-dir", str(tmp_path / "runs"))
    assert res3.returncode == 0, res3.stderr[-2000:]
    assert "held-out geometry:test, n=4 prompts" in res3.stdout and "base on counting:ood" in res3.stdout
    geo_cfg = (tmp_path / "runs" / "demo-geometry-grpo_d-seed0" / "config.yaml").read_text()
    assert "name: geometry" in geo_cfg and "beta_max: 0.02" in geo_cfg
    # the trained run evaluates from its latest checkpoint, on another task too
    ev = _run("eval", "--run", str(run), "--task", "geometry:test", "--n", "4", "--samples", "1")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "geometry:test" in ev.stdout and "greedy" in ev.stdout and "n=4 prompts" in ev.stdout
    bad = _run("eval", "--run", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no config.yaml" in bad.stderr


@pytest.mark.slow
def test_eval_on_an_r1v_jsonl_file(tmp_path, base_dir):
    from r1v_files import write_r1v_jsonl

    from othinklab.tasks import make_task

    path = write_r1v_jsonl(make_task("counting").samples(4, split="ood"), tmp_path / "test.jsonl", tmp_path / "images")
    res = _run("eval", "--model", "tiny", "--task", "counting", "--data", str(path), "--n", "4", "--samples", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "counting:test.jsonl" in res.stdout and "n=4 prompts" in res.stdout
    (tmp_path / "bad.jsonl").write_text('{"image_path": "missing.png", "question": "q", "ground_truth": "3"}\n')
    bad = _run("eval", "--model", "tiny", "--task", "counting", "--data", str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and "bad.jsonl" in bad.stderr and "Traceback" not in bad.stderr


def test_third_party_warnings_only_with_verbose():
    for verbose, shown in ((False, 0), (True, 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with _quiet(verbose):
                warnings.warn("`foo` is deprecated and will be removed", FutureWarning, stacklevel=1)
        assert len(seen) == shown


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
