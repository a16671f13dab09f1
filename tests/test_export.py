"""`othinklab export`: adapter or merged model + processor + model card from a real (1-step) tiny run; the
export directory follows the umask and keeps an existing one's mode."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from othinklab.config import load_config
from othinklab.errors import UserError
from othinklab.export import export_run
from othinklab.trainer import train

SMALL = [
    "grpo.prompts_per_step=2",
    "grpo.num_generations=2",
    "grpo.max_completion_length=8",
    "task.num_eval=2",
    "train.threads=1",
    "train.total_steps=1",
    "train.learning_rate=0.05",  # large, so the adapter visibly moves the weights
    "train.log_rollouts=false",
    "model.name=tiny-init",  # the untrained tiny model: exporting does not need the warmed-up base
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_runs")
    res = train(load_config(None, [*SMALL, f"train.output_dir={out}", "train.run_name=r"]), progress=False)
    # One step of the untrained model rarely moves LoRA's zero-initialised B; give the adapter random
    # weights so a merge that dropped it would be caught.
    from safetensors.torch import load_file, save_file

    from othinklab.checkpoint import latest_checkpoint

    (weights,) = (latest_checkpoint(res.run_dir / "checkpoints") / "model").glob("*.safetensors")
    g = torch.Generator().manual_seed(0)
    tensors = {
        k: torch.randn(v.shape, generator=g) * 0.2 if "lora_B" in k else v for k, v in load_file(weights).items()
    }
    save_file(tensors, weights)
    return res.run_dir


@pytest.mark.slow
def test_merged_export_loads_with_auto_class_and_matches_the_adapter(run_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from othinklab import checkpoint as ckpt_io
    from othinklab.models import load_model

    out = export_run(run_dir, tmp_path / "merged", merge=True)
    merged = AutoModelForImageTextToText.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    cfg = load_config(run_dir / "config.yaml")
    adapter_model, _ = load_model(cfg.model, device="cpu")
    ckpt_io.load_weights(adapter_model, ckpt_io.latest_checkpoint(run_dir / "checkpoints"))
    ids = torch.arange(5, 25).view(1, -1)
    with torch.no_grad():
        want = adapter_model.eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with adapter_model.disable_adapter():
            base = adapter_model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(base, want, atol=1e-3)  # the adapter did something, so the check can fail
    card = (out / "README.md").read_text()
    for needle in (
        "| base model | `tiny-init` |",
        "GRPO-D",
        "beta_min=0.04",
        "counting",
        "| steps | 1 of 1",
        "reward/total",
    ):
        assert needle in card, needle
    assert (out / "preprocessor_config.json").exists() or (out / "processor_config.json").exists()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).decode([5, 6]) != ""


@pytest.mark.slow
def test_adapter_export_and_bf16(run_dir, tmp_path):
    out = export_run(run_dir, tmp_path / "adapter", dtype="bf16")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert "library_name: peft" in (out / "README.md").read_text()
    with pytest.raises(UserError, match="not empty"):
        export_run(run_dir, out)
    with pytest.raises(UserError, match="no config.yaml"):
        export_run(tmp_path, tmp_path / "x")


@pytest.mark.slow
def test_push_to_hub_offline_is_a_clear_error_and_keeps_the_export(run_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "pushed"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "othinklab.cli",
            "export",
            "--run",
            str(run_dir),
            "--out",
            str(out),
            "--merge",
            "--push-to-hub",
            "someone/tiny-grpo-d",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "someone/tiny-grpo-d" in proc.stderr and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "README.md").exists() and (out / "config.json").exists()


def _image_generate(model, processor) -> torch.Tensor:
    from PIL import Image

    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")
    assert "pixel_values" in inputs and "image_grid_thw" in inputs
    return model.generate(**inputs, max_new_tokens=3, do_sample=False)


@pytest.mark.slow
def test_export_of_the_default_model_is_a_model_plain_transformers_loads_and_feeds_an_image(run_dir, tmp_path):
    """Class 3: processor_config.json names the standard processor, with the shipped video-less class as
    remote code; AutoModelForImageTextToText + AutoProcessor load it here (no torchvision) and take an image,
    and `othinklab eval --model <export>` (models.load_model) gets a full processor, not a bare tokenizer."""
    import json

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from othinklab.models import load_model

    out = export_run(run_dir, tmp_path / "merged", merge=True)
    config = json.loads((out / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2VLProcessor"
    assert "TinyQwen2VLProcessor" not in (out / "tokenizer_config.json").read_text().replace(
        "processing_othinklab.TinyQwen2VLProcessor", ""
    )
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert hasattr(processor, "image_processor") and processor.chat_template
    assert _image_generate(model, processor).shape[1] > 0
    model2, processor2 = load_model(str(out), device="cpu")
    assert hasattr(processor2, "image_processor")
    assert _image_generate(model2.eval(), processor2).shape[1] > 0


@pytest.mark.slow
def test_card_front_matter_is_huggingface_hubs_and_says_what_the_run_was(run_dir, tmp_path):
    """Class 4: an SFT run's card says SFT (not GRPO-D); front matter parses as hub metadata."""
    import shutil

    from huggingface_hub import ModelCard

    from othinklab.sft_run import run_sft

    out = export_run(run_dir, tmp_path / "grpo")
    data = ModelCard.load(out / "README.md").data
    assert data.library_name == "peft" and data.pipeline_tag == "image-text-to-text"
    assert "grpo-d" in data.tags and data.base_model is None  # `tiny-init` is not a hub id
    cfg = load_config(
        None, [*SMALL, "sft.steps=1", "sft.batch_size=2", f"train.output_dir={tmp_path}", "train.run_name=s"]
    )
    sft = run_sft(cfg, progress=False).run_dir
    card = (export_run(sft, tmp_path / "sft_out") / "README.md").read_text()
    assert "(SFT," in card and "GRPO-D" not in card and "| steps | 1 of 1" in card
    assert "sft" in ModelCard.load(tmp_path / "sft_out" / "README.md").data.tags
    # malformed metrics rows (a list, a string step, junk) neither crash the card nor reach it
    shutil.copytree(run_dir, tmp_path / "junk")
    with open(tmp_path / "junk" / "metrics.jsonl", "a") as fh:
        fh.write('[1, 2]\n{"step": "x", "reward/total": 9}\n"text"\n{"step": true}\n')
    card = (export_run(tmp_path / "junk", tmp_path / "junk_out") / "README.md").read_text()
    assert "| reward/total | 9 |" not in card


@pytest.mark.parametrize("text", ["", "\n", "# nothing\n", "[]\n", "kl: 3\n"])
def test_export_refuses_an_empty_or_foreign_config(run_dir, tmp_path, text):
    """Class 4: an empty config.yaml once exported the adapter onto a default base with a card of defaults."""
    import shutil

    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(text)
    with pytest.raises(UserError, match="config"):
        export_run(tmp_path / "run", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_directory_as_model_name_loads_its_trained_weights(run_dir, tmp_path, monkeypatch, capsys):
    """Class 3: a run directory as `model.name` (which the docs allow) crashed; it now loads as its base with
    the run's adapter folded in, and `othinklab eval --model <run>` scores it."""
    from othinklab import checkpoint as ckpt_io
    from othinklab.cli import main
    from othinklab.export import run_as_model
    from othinklab.models import load_model

    monkeypatch.setenv("OTHINKLAB_HOME", str(tmp_path / "home"))
    model, processor = load_model(str(run_as_model(run_dir)), device="cpu")
    assert hasattr(processor, "image_processor")
    cfg = load_config(run_dir / "config.yaml")
    trained, _ = load_model(cfg.model, device="cpu")
    ckpt_io.load_weights(trained, ckpt_io.latest_checkpoint(run_dir / "checkpoints"))
    ids = torch.arange(5, 25).view(1, -1)
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits, trained.eval()(input_ids=ids).logits, atol=1e-4)
    assert main(["eval", "--model", str(run_dir), "--n", "2", "--samples", "1"]) == 0
    assert "counting:ood" in capsys.readouterr().out


def test_an_export_follows_the_umask_and_keeps_an_existing_out_mode(tmp_path, monkeypatch):
    """Class 12: exports were created 0700 (mkdtemp), replacing an existing 0755 --out."""
    from othinklab import export

    seen: list[int] = []

    class Saved:
        def save_pretrained(self, folder):
            (Path(folder) / "config.json").write_text("{}")

    monkeypatch.setattr(
        export, "_load_trained", lambda run_dir, dtype: (None, Saved(), None, tmp_path / "step-000001", "fp32")
    )
    monkeypatch.setattr(export, "_save_processor", lambda processor, folder: None)
    monkeypatch.setattr(export, "model_card", lambda *a, **k: "card")
    monkeypatch.setattr("othinklab.models.is_lora", lambda model: False)
    old = os.umask(0o022)
    try:
        new = export.export_run(tmp_path, tmp_path / "new")
        seen.append(stat.S_IMODE(new.stat().st_mode))
        (tmp_path / "existing").mkdir()
        (tmp_path / "existing").chmod(0o750)
        kept = export.export_run(tmp_path, tmp_path / "existing")
        seen.append(stat.S_IMODE(kept.stat().st_mode))
    finally:
        os.umask(old)
    assert seen == [0o755, 0o750]
    assert (tmp_path / "new" / "README.md").read_text() == "card"
