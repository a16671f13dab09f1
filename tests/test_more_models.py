"""Qwen2.5-VL and Qwen3-VL through the same path as Qwen2-VL, on tiny random configs built here (no download):
greedy rollouts equal `model.generate`, a 2-step GRPO run trains, and the `generate` fallback for other
architectures is chosen automatically, logged, and decodes the same tokens."""

from __future__ import annotations

import logging

import pytest
import torch

from othinklab import tiny
from othinklab.config import load_config
from othinklab.models import add_lora
from othinklab.sampling import (
    NEVER_SAMPLED,
    SamplingParams,
    encode_prompts,
    generate_groups,
    sample_groups,
    supports_shared_prefill,
    token_ids,
)
from othinklab.tasks import make_task
from othinklab.trainer import train

ARCHS = ("qwen2_5_vl", "qwen3_vl")


def qwen3_vl_config(tok, hidden: int = 64):
    """A 2-layer Qwen3-VL (interleaved multimodal rotary, deepstack vision features) matching the tiny tokenizer."""
    from transformers import Qwen3VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True}
    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        rope_parameters=rope,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(
        depth=2,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_heads=4,
        out_hidden_size=hidden,
        patch_size=14,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    )
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build(arch: str):
    """(model, processor): random weights, perturbed so greedy decoding is not one repeated token."""
    from transformers import AutoModelForImageTextToText

    tok = tiny.build_tokenizer(0)
    processor = tiny.make_processor(tok, tiny.build_image_processor())
    config = qwen3_vl_config(tok) if arch == "qwen3_vl" else tiny.tiny_config(tok, arch=arch)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor


def _generate(model, processor, samples, n):
    enc = encode_prompts(processor, samples, "cpu")
    eos = processor.tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[1],
            suppress_tokens=token_ids(processor, NEVER_SAMPLED),
        )
    return out[:, enc["input_ids"].shape[1] :]


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_rollout_equals_generate(arch):
    model, processor = build(arch)
    assert model.config.model_type == arch and supports_shared_prefill(model)
    samples = make_task("counting").samples(3, split="train", seed=1)
    r = sample_groups(model, processor, samples, num_generations=1, max_new_tokens=10, greedy=True)
    want = _generate(model, processor, samples, 10)
    got = r.completion_ids[:, : want.shape[1]]
    assert torch.equal(got * r.completion_mask[:, : want.shape[1]], want * r.completion_mask[:, : want.shape[1]])
    assert len(set(r.completion_ids.flatten().tolist())) > 3  # varied tokens, so the comparison can fail


def length_reward(completion: str, solution: str) -> float:
    """A reward with spread on a random model (its accuracy is always 0), so the 2-step run has gradients."""
    return (len(completion) % 7) / 7


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_two_step_grpo_run(arch, tmp_path):
    model, processor = build(arch)
    model = add_lora(model, r=4, alpha=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = load_config(
        None,
        [
            "grpo.prompts_per_step=2",
            "grpo.num_generations=4",
            "grpo.max_completion_length=8",
            "train.total_steps=2",
            "train.learning_rate=0.01",
            "train.threads=1",
            "train.log_rollouts=false",
            f"reward.accuracy_function={__file__}:length_reward",
            f"train.output_dir={tmp_path}",
            "task.num_eval=2",
        ],
    )
    res = train(cfg, progress=False, model_and_processor=(model, processor))
    assert res.steps_done == 2
    from othinklab.metrics import read_jsonl

    rows = read_jsonl(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["skipped/nonfinite"] == 0 for r in rows)
    assert rows[0]["reward/std"] > 0
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved, "no LoRA weight changed in two steps"


def test_generate_fallback_is_chosen_logged_and_decodes_the_same(caplog):
    model, processor = build("qwen3_vl")
    samples = make_task("counting").samples(2, split="train", seed=2)
    shared = sample_groups(model, processor, samples, num_generations=1, max_new_tokens=10, greedy=True)
    direct = generate_groups(model, processor, samples, SamplingParams(1, 10, greedy=True))
    n = direct.completion_ids.shape[1]
    assert torch.equal(direct.completion_ids, shared.completion_ids[:, :n])
    assert direct.texts == shared.texts
    # sampled: reproducible from the caller's generator, G rows per prompt
    a = generate_groups(model, processor, samples, SamplingParams(3, 8), torch.Generator().manual_seed(5))
    b = generate_groups(model, processor, samples, SamplingParams(3, 8), torch.Generator().manual_seed(5))
    assert torch.equal(a.completion_ids, b.completion_ids) and a.completion_ids.shape[0] == 6
    # an architecture outside SHARED_PREFILL_TYPES (here the same network relabelled) goes through generate
    model.config.model_type = "some_other_vlm"
    assert not supports_shared_prefill(model)
    with caplog.at_level(logging.WARNING, logger="othinklab"):
        fallback = sample_groups(model, processor, samples, num_generations=1, max_new_tokens=10, greedy=True)
    assert "some_other_vlm" in caplog.text and "generate" in caplog.text
    assert torch.equal(fallback.completion_ids, direct.completion_ids)


# --------------------------------------------------------------------------- the real-size build (make real-check)
def _benchmarks():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import _models
    import real_check

    return _models, real_check


@pytest.fixture
def tiny_real_arch(tmp_path, monkeypatch):
    """`make real-check`'s builder pointed at a tiny Qwen3-VL config and a fresh `$OTHINKLAB_HOME`."""
    import json

    _models, _ = _benchmarks()
    raw = qwen3_vl_config(tiny.build_tokenizer(0)).to_dict()
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "tiny-qwen3.json").write_text(json.dumps(raw))
    monkeypatch.setattr(_models, "ARCH_DIR", tmp_path / "arch")
    monkeypatch.setitem(_models.REAL_ARCHS, "Tiny-Qwen3", ("tiny-qwen3.json", 64))
    monkeypatch.setenv("OTHINKLAB_HOME", str(tmp_path / "home"))
    return _models


@pytest.mark.slow
def test_random_build_is_seeded_and_sane(tiny_real_arch):
    _models = tiny_real_arch
    config = _models.arch_config("Tiny-Qwen3", tiny.build_tokenizer(0))
    a, b = _models.build_random(config), _models.build_random(config)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    params = dict(a.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    q = params["model.language_model.layers.0.self_attn.q_proj.weight"].float()
    assert 0.015 < q.std().item() < 0.025 and torch.equal(q, q) and q.abs().max() > 0
    assert torch.all(params["model.language_model.norm.weight"] == 1)
    assert a.lm_head.weight.data_ptr() == a.model.language_model.embed_tokens.weight.data_ptr()  # still tied
    c = _models.build_random(config, seed=1)
    assert not torch.equal(c.state_dict()["lm_head.weight"], sa["lm_head.weight"])


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_a_later_run_trusts(tiny_real_arch, monkeypatch):
    from transformers import PreTrainedModel

    _models = tiny_real_arch
    original = PreTrainedModel.save_pretrained

    def killed(self, path, *a, **kw):
        original(self, path, *a, **kw)
        raise KeyboardInterrupt  # as if interrupted after the weights were written

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        _models.ensure_arch("Tiny-Qwen3")
    home = _models.arch_dir("Tiny-Qwen3").parent
    assert not _models.arch_dir("Tiny-Qwen3").exists() and not list(home.iterdir())
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    path = _models.ensure_arch("Tiny-Qwen3")
    assert (path / "othinklab.json").exists() and (path / "model.safetensors").exists()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert _models.ensure_arch("Tiny-Qwen3") == path and (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_real_check_skips_when_memory_is_short(tiny_real_arch, monkeypatch, tmp_path):
    _, real_check = _benchmarks()
    monkeypatch.setattr(real_check, "free_memory_gib", lambda: 0.25)
    rows = list(real_check.check_arch("Tiny-Qwen3", 1, 60, tmp_path))
    assert [r[:2] for r in rows] == [("SKIP", "build")] and "0.2 GiB available" in rows[0][2]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_4bit_lora_leaves_the_vision_tower_alone(arch, tmp_path):
    """Qwen2.5-VL's vision MLP reuses the text names (gate/up/down_proj), Qwen3-VL adds deepstack mergers: in
    4-bit neither tower is quantised nor adapted, and every text projection is."""
    from othinklab.models import LORA_TARGETS, load_model

    model, processor = build(arch)
    tiny.save_pretrained(model, processor, tmp_path / arch)
    model, _ = load_model(str(tmp_path / arch), dtype="bfloat16", load_in_4bit=True, lora=True, lora_r=4)
    quantised = [n for n, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes")]
    layers = model.config.get_text_config().num_hidden_layers
    assert len(quantised) == layers * len(LORA_TARGETS) and not any("visual" in n for n in quantised)
    adapted = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapted and not any("visual" in n for n in adapted)
