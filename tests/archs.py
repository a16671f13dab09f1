"""Test helper: tiny random Qwen2.5-VL and Qwen3-VL models built here (no download), shared by
test_sampling, test_trainer, test_models and test_benchmarks."""

from __future__ import annotations

import torch

from othinklab import tiny

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
