"""The bad-input table: each mistake a user can make ends in exit code 2 with one message naming the file,
field, value or row at fault; no traceback, and nothing already on disk is written over."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from othinklab.cli import main

FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "train.total_steps=1"]


def _image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    return path.name


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(tmp: Path, **kw) -> dict:
    row = {"image_path": _image(tmp / "img.png"), "problem": "How many objects?", "solution": "<answer> 3 </answer>"}
    row.update(kw)
    return row


def _yaml(tmp: Path, text: str) -> list[str]:
    f = tmp / "bad.yaml"
    f.write_text(text)
    return ["train", "--config", str(f)]


def _data(tmp: Path, rows_or_text) -> list[str]:
    f = tmp / "data.jsonl"
    if isinstance(rows_or_text, str):
        f.write_text(rows_or_text)
    else:
        _jsonl(f, rows_or_text)
    return ["train", *FAST, f"train.output_dir={tmp / 'runs'}", f"task.data_path={f}"]


def _corrupt_image(tmp: Path) -> list[str]:
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return _data(tmp, [_row(tmp, image_path="broken.png")])


def _reward_file(tmp: Path, body: str) -> str:
    f = tmp / "my_reward.py"
    f.write_text(body)
    return str(f)


OTHER_REWARD = "def other(completion, solution):\n    return 1.0\n"

CASES = {
    # --- the config file and overrides
    "malformed yaml": (lambda t: _yaml(t, "kl: [beta\n"), "not valid YAML"),
    "yaml top level is a list": (lambda t: _yaml(t, "- kl\n- grpo\n"), "top level must be a mapping"),
    "section is not a mapping": (lambda t: _yaml(t, "kl: 0.04\n"), "section 'kl' must be a mapping"),
    "unknown section": (lambda t: _yaml(t, "klx:\n  beta: 0.1\n"), "did you mean 'kl'"),
    "unknown field": (lambda t: _yaml(t, "kl:\n  betta: 0.1\n"), "did you mean 'beta'"),
    "mistyped number": (lambda t: _yaml(t, "kl:\n  beta: lots\n"), "kl.beta='lots' must be a number"),
    "float for an integer": (lambda t: ["train", "train.total_steps=2.5"], "train.total_steps=2.5 must be an integer"),
    "not a boolean": (lambda t: ["train", "model.lora=maybe"], "model.lora='maybe' must be true or false"),
    "list for a string": (lambda t: _yaml(t, "model:\n  name: [a, b]\n"), "model.name"),
    "override without =": (lambda t: ["train", "kl.beta"], "must look like section.field=value"),
    "config file missing": (lambda t: ["train", "--config", str(t / "nope.yaml")], "does not exist"),
    # --- out-of-range values
    "negative beta": (lambda t: ["train", "kl.beta=-0.1"], "kl.beta=-0.1"),
    "explore_frac above 1": (lambda t: ["train", "kl.explore_frac=1.5"], "kl.explore_frac=1.5"),
    "explore_frac zero": (lambda t: ["train", "kl.explore_frac=0"], "kl.explore_frac=0"),
    "G below 2": (lambda t: ["train", "grpo.num_generations=1"], "grpo.num_generations=1"),
    "beta_max below beta_min": (lambda t: ["train", "kl.beta_min=0.2", "kl.beta_max=0.1"], "kl.beta_max=0.1"),
    "unknown schedule": (lambda t: ["train", "kl.schedule=exponential"], "kl.schedule='exponential'"),
    "unknown task": (lambda t: ["train", "task.name=ocr"], "task.name='ocr'"),
    "4-bit without LoRA": (lambda t: ["train", "model.load_in_4bit=true", "model.lora=false"], "model.load_in_4bit"),
    "zero steps": (lambda t: ["train", "train.total_steps=0"], "train.total_steps=0"),
    # --- models and reward functions
    "model path does not exist": (
        lambda t: ["train", *FAST, f"model.name={t / 'no_model'}", f"train.output_dir={t}"],
        "no_model",
    ),
    "reward module not importable": (
        lambda t: ["train", *FAST, "reward.accuracy_function=no_such_module:fn", f"train.output_dir={t}"],
        "reward.accuracy_function='no_such_module:fn'",
    ),
    "reward function missing from file": (
        lambda t: [
            "train",
            *FAST,
            "reward.accuracy_function=" + _reward_file(t, OTHER_REWARD) + ":mine",
            f"train.output_dir={t}",
        ],
        "has no function 'mine'",
    ),
    # --- datasets
    "dataset file missing": (
        lambda t: ["train", *FAST, f"task.data_path={t / 'none.jsonl'}", f"train.output_dir={t}"],
        "none.jsonl",
    ),
    "empty dataset": (lambda t: _data(t, ""), "dataset is empty"),
    "corrupt JSONL line": (lambda t: _data(t, '{"image_path": "a.png", "problem": \n'), "row 0"),
    "missing image file": (lambda t: _data(t, [_row(t, image_path="missing.png")]), "missing.png"),
    "corrupt image file": (_corrupt_image, "broken.png"),
    "answer column missing": (
        lambda t: _data(t, [{"image_path": _image(t / "img.png"), "problem": "How many?"}]),
        "answer",
    ),
    "counting answer not a number": (lambda t: _data(t, [_row(t, solution="<answer> three </answer>")]), "three"),
    "prompt longer than the context": (
        lambda t: _data(t, [_row(t, problem="How many objects are there " * 600 + "?")]),
        "exceeds the model's context",
    ),
    # --- run directories and evaluation
    "resume a run that does not exist": (
        lambda t: ["train", "--resume", *FAST, f"train.output_dir={t}", "train.run_name=ghost"],
        "has no config.yaml",
    ),
    "eval --run on a non-run directory": (lambda t: ["eval", "--run", str(t)], "no config.yaml"),
    "eval of an unknown task": (lambda t: ["eval", "--task", "ocr:test", "--n", "2"], "unknown task 'ocr'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_a_named_cause(name, tmp_path, capsys, base_dir):
    make_args, needle = CASES[name]
    code = main(make_args(tmp_path))
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit code {code}; stderr: {err[-1500:]}"
    assert needle in err, f"{name}: {needle!r} not in {err!r}"
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, f"{name}: the message should be one paragraph: {err!r}"


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.slow
def test_run_directory_of_another_config_is_left_untouched(tmp_path, capsys, base_dir):
    args = ["train", *FAST, f"train.output_dir={tmp_path}", "train.run_name=mine"]
    assert main(args) == 0
    run = tmp_path / "mine"
    before = _tree_digest(run)
    capsys.readouterr()
    for again, needle in (
        ([*args, "kl.beta_max=0.5"], "already holds a run with another config (differs in kl.beta_max)"),
        (args, "pass --resume to continue it"),
    ):
        assert main(again) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
        assert _tree_digest(run) == before
    assert len(CASES) >= 25
