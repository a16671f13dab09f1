"""Issue 27 classes 8, 11 and 12 through the CLI: values once silently changed or accepted, numeric fields
and flags out of range, output directories that cannot be written, model directories with a bad
config.json. Each ends in exit 2 with one paragraph naming the field, flag or path; nothing is trained.
Property-based: any value of any numeric field or flag ends in exit 0 or 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_errors import assert_exits_2_naming
from hypothesis import given, settings
from hypothesis import strategies as st
from property_strategies import FAST

from othinklab.cli import main
from othinklab.config import Config, load_config


def _yaml(tmp: Path, text: str, command: str = "estimate") -> list[str]:
    (tmp / "c.yaml").write_text(text)
    return [command, "--config", str(tmp / "c.yaml")]


def _file(tmp: Path, name: str = "afile") -> Path:
    (tmp / name).write_text("not a directory")
    return tmp / name


def _bad_model(tmp: Path, text: str) -> str:
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text(text)
    return str(tmp / "m")


LONG = "x" * 300
CASES = {
    # class 8: values silently changed or accepted
    "a duplicate kl: section": (
        lambda t: _yaml(t, "kl:\n  schedule: constant\nkl:\n  beta: 0.1\n"),
        "'kl' appears twice",
    ),
    "a duplicate nested key": (lambda t: _yaml(t, "kl:\n  beta: 0.1\n  beta: 0.2\n"), "'beta' appears twice"),
    "a duplicate key in train's config": (lambda t: _yaml(t, "train:\n  seed: 1\n  seed: 2\n", "train"), "twice"),
    "eval.temperature=-1": (lambda t: ["estimate", "eval.temperature=-1"], "eval.temperature=-1.0 is invalid"),
    "eval.temperature=0": (lambda t: ["estimate", "eval.temperature=0"], "eval.temperature=0.0 is invalid"),
    "train.run_name=null": (lambda t: ["train", "train.run_name=null"], "train.run_name=null is invalid"),
    "run_name: null in YAML": (lambda t: _yaml(t, "train:\n  run_name: null\n", "sft"), "train.run_name=null"),
    "train.output_dir=null": (lambda t: ["train", "train.output_dir=~"], "train.output_dir=null is invalid"),
    # class 11: numeric fields out of range
    "a negative seed": (lambda t: ["estimate", "train.seed=-1"], "train.seed=-1 is invalid"),
    "a huge seed": (lambda t: ["estimate", "train.seed=99999999999999999999"], "train.seed=99999999999999999999"),
    "a negative task seed": (lambda t: ["sft", "task.seed=-5"], "task.seed=-5 is invalid"),
    "lora_dropout 1.5": (lambda t: ["estimate", "model.lora_dropout=1.5"], "model.lora_dropout=1.5 is invalid"),
    "lora_dropout -0.1": (lambda t: ["estimate", "model.lora_dropout=-0.1"], "model.lora_dropout=-0.1"),
    "max_pixels 0": (lambda t: ["estimate", "model.max_pixels=0"], "model.max_pixels=0 is invalid"),
    "max_pixels negative": (lambda t: ["train", "model.max_pixels=-100"], "model.max_pixels=-100"),
    "threads -1": (lambda t: ["train", "train.threads=-1"], "train.threads=-1 is invalid"),
    "threads 10**6": (lambda t: ["train", "train.threads=1000000"], "train.threads=1000000 is invalid"),
    "a huge num_generations": (lambda t: ["estimate", "grpo.num_generations=1000000000"], "grpo.num_generations"),
    "a huge prompts_per_step": (lambda t: ["train", "grpo.prompts_per_step=10000000"], "grpo.prompts_per_step"),
    "SFT batch size 0": (lambda t: ["sft", "sft.batch_size=0"], "sft.batch_size=0 is invalid"),
    "SFT learning rate negative": (lambda t: ["sft", "sft.learning_rate=-0.1"], "sft.learning_rate=-0.1"),
    "a 100-digit step count": (lambda t: ["estimate", f"train.total_steps={10**100}"], "out of range"),
    "reward.timeout_s 0": (lambda t: ["estimate", "reward.timeout_s=0"], "reward.timeout_s=0.0 is invalid"),
    "demo --seed 10**30": (lambda t: ["demo", f"--seed={10**30}"], "--seed: must be in [0, 4294967295]"),
    "eval --n 10**20": (lambda t: ["eval", f"--n={10**20}"], "--n: must be in [1, 2147483647]"),
    # estimate on hostile shapes
    "estimate: a world size train refuses": (lambda t: ["estimate", "--world-size", "3"], "must be divisible"),
    "estimate: a huge world size": (lambda t: ["estimate", "--world-size", "1000", "--device", "t4"], "divisible"),
    "estimate: an absurd image size": (lambda t: ["estimate", "--image-size", "10000000"], "--image-size 10000000"),
    "estimate: an absurd completion": (
        lambda t: ["estimate", "grpo.max_completion_length=1000000000000"],
        "past any Qwen-VL context",
    ),
    # model directories with a bad config.json
    "estimate: model config.json not JSON": (lambda t: ["estimate", f"model.name={_bad_model(t, '{')}"], "config.json"),
    "train: model config.json not JSON": (
        lambda t: ["train", f"model.name={_bad_model(t, '{')}", f"train.output_dir={t / 'runs'}"],
        "config.json",
    ),
    "eval: model config.json not JSON": (lambda t: ["eval", "--model", _bad_model(t, "{"), "--n", "1"], "config.json"),
    "eval: model config.json a list": (lambda t: ["eval", "--model", _bad_model(t, "[]"), "--n", "1"], "config.json"),
    # --out / --output-dir that cannot be written
    "export --out is a file": (lambda t: ["export", "--run", str(t), "--out", str(_file(t))], "is a file"),
    "export --out under a file": (
        lambda t: ["export", "--run", str(t), "--out", str(_file(t) / "x")],
        "which is a file",
    ),
    "export --out too long": (lambda t: ["export", "--run", str(t), "--out", str(t / LONG)], "over 255 bytes"),
    "grid --output-dir is a file": (lambda t: ["grid", "--output-dir", str(_file(t))], "is a file"),
    "demo --output-dir under a file": (lambda t: ["demo", "--output-dir", str(_file(t) / "r")], "which is a file"),
    "ablate --output-dir too long": (lambda t: ["ablate", "--output-dir", str(t / LONG / "x")], "over 255 bytes"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_flag_or_field_exits_2_with_one_paragraph(name, tmp_path, capsys):
    make_args, needle = CASES[name]
    assert_exits_2_naming(name, make_args(tmp_path), needle, capsys)
    made = {p.name for p in (tmp_path / "runs").rglob("*")} if (tmp_path / "runs").exists() else set()
    assert made <= {"config.yaml", ".lock"} | {p.name for p in (tmp_path / "runs").glob("*")}, made  # no step ran


@pytest.mark.slow
def test_mask_truncated_with_every_completion_truncated_stops_loudly(tmp_path, capsys):
    """Class 8: `mask_truncated_completions` with every completion truncated trained nothing and exited 0."""
    args = ["train", "model.name=tiny-init", f"train.output_dir={tmp_path}", "train.run_name=r", "train.threads=1",
            "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=1", "task.num_eval=2",
            "train.total_steps=6", "grpo.mask_truncated_completions=true", "train.log_rollouts=false"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("this step trained nothing") == 3  # two warnings, then the error
    assert "3 steps in a row" in err and "grpo.max_completion_length" in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_and_export_survive_malformed_metrics_rows(tmp_path, capsys):
    """Class 11: malformed `metrics.jsonl` rows (a list, a string step, a bare string) gave a traceback on
    resume and on export."""
    base = ["model.name=tiny-init", f"train.output_dir={tmp_path}", "train.run_name=r", "train.threads=1",
            "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=4",
            "task.num_eval=2", "train.log_rollouts=false", "train.save_every=1"]  # fmt: skip
    assert main(["train", *base, "train.total_steps=2"]) == 0
    import shutil

    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-000002")  # as if killed before the last checkpoint
    with open(tmp_path / "r" / "metrics.jsonl", "a") as fh:
        fh.write('[1, 2]\n{"step": "x"}\n"text"\n{"step": 0.5}\n{"nostep": 1}\n')
    assert main(["train", "--resume", *base, "train.total_steps=2"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]  # the junk after step 0 went with the resume's truncation
    with open(tmp_path / "r" / "metrics.jsonl", "a") as fh:
        fh.write('[1, 2]\n{"step": "x"}\n')
    assert main(["export", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "out")]) == 0
    assert "Traceback" not in capsys.readouterr().err and (tmp_path / "out" / "README.md").exists()


# --------------------------------------------------------------------------- the CLI's numeric fields and flags
CLI = settings(FAST, max_examples=30)


NUMERIC_FIELDS = [
    f"{section}.{f.name}"
    for section in ("model", "task", "grpo", "kl", "reward", "train", "eval", "sft")
    for f in __import__("dataclasses").fields(getattr(Config(), section))
    if f.type in ("int", "float")
]


NUMBERS = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([0, 1, -1, 2**31, 2**32, 2**53 + 1, 2**63, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e308", "-0.0", "1e-320", "0x10", "1_000", "nan", "-inf", "", "null", "[1]", "{a: 1}"]),
)


FLAGS = [
    ("demo", "--seed"),
    ("demo", "--steps"),
    ("demo", "--num-eval"),
    ("build-base", "--seed"),
    ("eval", "--n"),
    ("eval", "--samples"),
    ("estimate", "--world-size"),
    ("estimate", "--image-size"),
]


def _one_paragraph_or_success(code: int, err: str) -> None:
    assert code in (0, 2), f"exit {code}: {err[-800:]}"
    assert "Traceback" not in err
    if code == 2:
        assert 0 < len(err.strip().splitlines()) <= 3 and len(err) < 2000, err


@CLI
@given(st.sampled_from(NUMERIC_FIELDS), NUMBERS)
def test_any_numeric_field_on_the_command_line_ends_in_exit_0_or_2(capsys, key, value):
    """Issue 27 class 11: huge or negative seeds, lora_dropout, max_pixels, threads, a huge G, SFT batch size
    and learning rate each once ended in a traceback. `estimate` validates the whole config and runs the
    memory model on it (nothing is loaded or trained), so every accepted value is exercised too."""
    from othinklab.cli import main

    capsys.readouterr()
    code = main(["estimate", f"{key}={value}"])
    _one_paragraph_or_success(code, capsys.readouterr().err)
    if code == 0 and key in CONSUMERS:  # accepted: what consumes the field accepts it too
        CONSUMERS[key](getattr(getattr(load_config(None, [f"{key}={value}"]), key.split(".")[0]), key.split(".")[1]))


def _seed(v: int) -> None:
    import numpy as np
    import torch

    np.random.default_rng(v)
    torch.Generator().manual_seed(v)


def _lr(v: float) -> None:
    import torch

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=v)


def _temperature(v: float) -> None:
    from transformers import TemperatureLogitsWarper

    TemperatureLogitsWarper(v)


def _dropout(v: float) -> None:
    import torch

    torch.nn.Dropout(v)


CONSUMERS = {
    "train.seed": _seed,
    "task.seed": _seed,
    "train.learning_rate": _lr,
    "sft.learning_rate": _lr,
    "eval.temperature": _temperature,
    "grpo.temperature": _temperature,
    "model.lora_dropout": _dropout,
}
"""Fields whose accepted values are handed to a library that checks them: it must accept every one."""


@CLI
@given(st.sampled_from(FLAGS), NUMBERS)
def test_any_numeric_flag_ends_in_exit_0_or_2(capsys, flag, value):
    """Every numeric flag is parsed (and `estimate`'s flags run): exit 0 or 2 with one line, never a traceback.
    Flags of commands that train or evaluate are only parsed here (no training per example)."""
    from othinklab.cli import build_parser, main

    command, name = flag
    argv = [command, f"{name}={value}"]
    capsys.readouterr()
    if command == "estimate":
        code = main(argv)
    else:
        try:
            build_parser().parse_args(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
    _one_paragraph_or_success(code, capsys.readouterr().err)
    if code == 0 and command in ("demo", "build-base") and name == "--seed":
        import numpy as np
        import torch

        np.random.default_rng(int(value)), torch.Generator().manual_seed(int(value))  # a seed both accept
