"""The embedded default: built offline from a seed, identical on rebuild, a real Qwen2-VL that generates."""

from __future__ import annotations

import json

import pytest
import torch

from othinklab import tiny
from othinklab.models import load_model
from othinklab.sampling import encode_prompts, prompt_text
from othinklab.tasks import make_task


def test_untrained_rebuild_is_bit_identical():
    m1, p1 = tiny.build_untrained(seed=0)
    m2, p2 = tiny.build_untrained(seed=0)
    m3, _ = tiny.build_untrained(seed=1)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert p1.tokenizer.get_vocab() == p2.tokenizer.get_vocab()


def test_architecture_and_processor(untrained):
    model, processor = untrained
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert model.config.vision_config.patch_size == 14 and model.config.vision_config.spatial_merge_size == 2
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 3e6
    s = make_task("counting").samples(1)[0]
    text = prompt_text(processor, s)
    assert text.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
    )
    assert text.endswith("<|im_start|>assistant\n")
    enc = encode_prompts(processor, [s])
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((enc["input_ids"] == image_id).sum()) == 16  # 112x112 -> 8x8 patches -> 4x4 merged tokens
    assert int(enc["mm_token_type_ids"].sum()) == 16
    # digits are split one per token, as in Qwen's tokenizer
    assert processor.tokenizer.tokenize("140")[-3:] == ["1", "4", "0"]


def test_chat_prompt_with_image_generates(untrained):
    model, processor = untrained
    samples = make_task("geometry").samples(2)
    enc = encode_prompts(processor, samples)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 5)


def test_save_and_load_back_through_transformers(untrained, tmp_path):
    model, processor = untrained
    path = tiny.save_pretrained(model, processor, tmp_path / "saved", extra={"kind": "test"})
    m2, p2 = load_model(str(path))
    assert json.loads((path / "othinklab.json").read_text())["kind"] == "test"
    sd1, sd2 = model.state_dict(), m2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    enc = encode_prompts(p2, make_task("counting").samples(1))
    assert torch.equal(
        model.generate(**enc, max_new_tokens=4, do_sample=False), m2.generate(**enc, max_new_tokens=4, do_sample=False)
    )


def test_home_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OTHINKLAB_HOME", str(tmp_path))
    assert tiny.home() == tmp_path
    assert tiny.base_dir().parent == tmp_path


@pytest.mark.slow
def test_base_is_partly_competent(base_dir):
    """The cached base answers in format most of the time and is right well below ceiling on each task."""
    from othinklab.evaluate import evaluate_tasks, summary_table

    info = json.loads((base_dir / "othinklab.json").read_text())
    assert info["kind"] == "tiny-base" and info["warmup"]["steps"] > 0
    model, processor = load_model("tiny")
    for task, split in (("counting", "ood"), ("geometry", "test")):
        samples = make_task(task).samples(100, split=split, seed=10_000)
        table = summary_table(evaluate_tasks(model, processor, samples, num_samples=2)).set_index("mode")
        greedy = table.loc["greedy"]
        assert 0.1 <= greedy["accuracy"] <= 0.8, (task, greedy["accuracy"])  # right sometimes, far from ceiling
        assert greedy["format"] >= 0.5
        sampled = table.iloc[1]
        assert 0.3 <= sampled["format"] < 0.95, (task, sampled["format"])  # imperfect: format reward can teach
