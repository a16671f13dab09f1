"""End to end through the CLI: every checkpoint kind loads back, and what is loaded is sound (issue 27
classes 2, 7, 10).

Round trips of LoRA, full fine-tuning and SFT runs through `eval --run`, `train --resume` and `export`;
NaN/inf weights refused on load naming the last good checkpoint; a failed start restarted with a corrected
config, and refusals that name the differing fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from othinklab import checkpoint as ckpt_io
from othinklab.cli import main

FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]


EVAL = ["--task", "counting", "--n", "1", "--samples", "1"]


def _train(tmp: Path, name: str, *extra: str) -> list[str]:
    return ["train", *FAST, f"train.output_dir={tmp}", f"train.run_name={name}", *extra]


# --------------------------------------------------------------------------- class 2: every kind round-trips
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lora", "full", "sft"])
def test_every_checkpoint_kind_round_trips_through_eval_resume_and_export(tmp_path, capsys, kind):
    run = tmp_path / kind
    if kind == "sft":
        args = ["sft", "sft.steps=1", "sft.batch_size=2", "model.name=tiny-init", f"train.output_dir={tmp_path}"]
        assert main([*args, f"train.run_name={kind}"]) == 0
    else:
        lora = "model.lora=" + ("true" if kind == "lora" else "false")
        args = _train(tmp_path, kind, lora, "train.total_steps=2", "train.save_every=1")
        assert main(args) == 0
        ckpt = ckpt_io.latest_checkpoint(run / "checkpoints")
        saved = load_file(next((ckpt / "model").glob("*.safetensors")))
    capsys.readouterr()
    assert main(["eval", "--run", str(run), *EVAL]) == 0, capsys.readouterr().err
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "export")]) == 0, capsys.readouterr().err
    exported = tmp_path / "export"
    assert (exported / "README.md").is_file()
    assert (exported / "adapter_config.json").exists() == (kind != "full")
    if kind == "sft":  # an SFT checkpoint holds no GRPO state: a resume says so, no KeyError traceback
        assert main(["train", "--resume", *args[1:], "train.run_name=sft"]) == 2
        err = capsys.readouterr().err
        assert "'sft' training" in err and "Traceback" not in err, err
        return
    assert main(["train", "--resume", *args[1:]]) == 0, capsys.readouterr().err  # finished: loads, then stops
    # the full run's export holds exactly the trained weights (in transformers' layout, as saved)
    if kind == "full":
        out = load_file(next(exported.glob("*.safetensors")))
        key = next(k for k in saved if "layers.0.mlp.down_proj" in k)
        torch.testing.assert_close(out[key], saved[key])


# --------------------------------------------------------------------------- class 10: NaN/inf on load
@pytest.mark.slow
def test_a_nonfinite_checkpoint_is_refused_on_eval_export_and_resume_naming_the_last_good_one(tmp_path, capsys):
    args = _train(tmp_path, "r", "train.total_steps=2", "train.save_every=1")
    assert main(args) == 0
    ckpts = tmp_path / "r" / "checkpoints"
    good, bad = ckpt_io.complete_checkpoints(ckpts)
    (weights,) = (bad / "model").glob("*.safetensors")
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first][0] = float("nan")
    save_file(tensors, weights)
    capsys.readouterr()
    for command in (
        ["eval", "--run", str(tmp_path / "r"), *EVAL],
        ["export", "--run", str(tmp_path / "r"), "--out", str(tmp_path / "x")],
        ["train", "--resume", *args[1:]],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "NaN/inf" in err and f"previous checkpoint {str(good)!r}" in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- class 7: failed starts, differences
@pytest.mark.slow
def test_a_failed_start_is_restarted_with_the_corrected_config(tmp_path, capsys):
    base = _train(tmp_path, "r", "train.total_steps=1")
    typo = [a if not a.startswith("model.name=") else f"model.name={tmp_path / 'tiny-inti'}" for a in base]
    assert main(typo) == 2  # a typo in the model name: fails after config.yaml was written
    assert "tiny-inti" in (tmp_path / "r" / "config.yaml").read_text()
    assert main([*base, "task.eval_data_path=" + str(tmp_path / "missing.jsonl"), "train.eval_every=1"]) == 2
    capsys.readouterr()
    assert main(base) == 0, capsys.readouterr().err  # the corrected command runs; no "delete that directory"
    assert "task.eval_data_path was" in capsys.readouterr().err  # the note says what changed in config.yaml
    # a run that completed a step is protected: another config is refused, naming field and values
    assert main([*base, "kl.beta_max=0.5"]) == 2
    err = capsys.readouterr().err
    assert "differs in kl.beta_max" in err and "was 0.1, now 0.5" in err.replace("'", ""), err
    # --resume may change how the run is logged or fits in memory (e.g. after running out of memory)
    assert main(["train", "--resume", *base[1:], "train.log_rollouts=false", "model.gradient_checkpointing=true"]) == 0
