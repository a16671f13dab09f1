"""Every checkpoint kind loads back, and what is loaded is sound (issue 27 classes 2, 6, 7, 10).

Round trips of LoRA, full fine-tuning and SFT runs through `eval --run`, `train --resume` and `export`;
NaN/inf weights refused on load naming the last good checkpoint; a reader's checkpoint pinned against a
writer that saves every step with one kept (a real concurrent writer); a failed start restarted with a
corrected config, and refusals that name the differing fields."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from othinklab import checkpoint as ckpt_io
from othinklab.cli import main
from othinklab.errors import UserError

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


# --------------------------------------------------------------------------- class 6: readers during training
class _Stub(torch.nn.Module):
    """The smallest model `save_checkpoint` accepts: one trainable tensor written as safetensors."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({"w": self.w.detach().clone()}, str(Path(folder) / "model.safetensors"))


def _save(root: Path, step: int, model: _Stub, keep: int = 1) -> Path:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ckpt_io.save_checkpoint(root, step, model, opt, sched, {"batch_index": step}, keep=keep)


def test_a_pinned_checkpoint_survives_pruning_and_is_pruned_by_a_later_save(tmp_path):
    model = _Stub()
    _save(tmp_path, 1, model)
    with ckpt_io.pinned_latest(tmp_path) as pinned:
        assert pinned.name == "step-000001"
        _save(tmp_path, 2, model)  # keep=1 would delete step 1, but a reader holds it
        assert (pinned / "state.json").is_file() and (pinned / "model" / "model.safetensors").is_file()
    _save(tmp_path, 3, model)
    assert [p.name for p in ckpt_io.complete_checkpoints(tmp_path)] == ["step-000003"]


def test_a_checkpoint_pruned_before_the_pin_is_skipped_for_the_new_latest(tmp_path, monkeypatch):
    model = _Stub()
    _save(tmp_path, 1, model)
    real = ckpt_io.latest_checkpoint
    calls = []

    def chosen_then_pruned(root):  # the writer saves step 2 and prunes step 1 right after the reader chose it
        found = real(root)
        if not calls:
            _save(tmp_path, 2, model)
        calls.append(found)
        return found

    monkeypatch.setattr(ckpt_io, "latest_checkpoint", chosen_then_pruned)
    with ckpt_io.pinned_latest(tmp_path) as pinned:
        assert pinned.name == "step-000002" and calls[0].name == "step-000001"


def test_readers_always_get_a_whole_checkpoint_from_a_writer_saving_every_step(tmp_path):
    """A real concurrent writer (keep=1, a save every few ms) and a reader that is slow between choosing and
    reading: every read finds all of its checkpoint's files (without the pin some reads found their checkpoint deleted)."""
    model, stop, errors = _Stub(), threading.Event(), []
    _save(tmp_path, 0, model)

    def writer() -> None:
        step = 1
        while not stop.is_set():
            with torch.no_grad():
                model.w.fill_(step)
            _save(tmp_path, step, model)
            step += 1

    thread = threading.Thread(target=writer)
    thread.start()
    reads = []
    try:
        for _ in range(25):
            with ckpt_io.pinned_latest(tmp_path) as ckpt:
                time.sleep(0.02)  # the slow model load
                try:
                    state = json.loads((ckpt / "state.json").read_text())
                    w = load_file(str(ckpt / "model" / "model.safetensors"))["w"]
                    reads.append((state["step"], float(w[0])))
                except OSError as exc:
                    errors.append(exc)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert len(reads) == 25 and all(step == w or step == 0 for step, w in reads)
    assert len({step for step, _ in reads}) > 1  # the writer really moved on meanwhile


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


def test_a_config_from_an_older_version_is_compared_field_by_field(tmp_path):
    """A config.yaml without a field this version added takes its default; a real difference is named."""
    import yaml

    from othinklab.config import load_config, to_yaml
    from othinklab.runs import prepare_run_dir

    cfg = load_config(None, [f"train.output_dir={tmp_path}", "train.run_name=r"])
    run = prepare_run_dir(cfg, resume=False)
    old = yaml.safe_load(to_yaml(cfg))
    del old["grpo"]["logprob_chunk"]  # "an older version" did not have it
    old["kl"]["beta_max"] = 0.2
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')  # the run completed a step
    with pytest.raises(UserError, match=r"differs in kl\.beta_max\): kl\.beta_max was '0\.2', now '0\.1'") as info:
        prepare_run_dir(cfg, resume=True)
    assert "logprob_chunk" not in str(info.value).split("A run that")[0]
