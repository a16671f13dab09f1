"""The benchmark models, shared by bench_vs_trl.py and bench_rollout.py.

- `tiny`: othinklab's embedded default (1.4M parameters, ~600-token vocabulary), `load_model("tiny")`.
- `realvocab`: a ~48M-parameter Qwen2-VL built from config with random weights and Qwen2-VL's real
  vocabulary size (151,936), so the cost of full-vocabulary logits is realistic: text 256 wide x 8
  layers, tied embeddings (as Qwen2-VL-2B), the tiny model's vision tower and processor (112x112 images,
  16 visual tokens). Token ids beyond the tiny tokenizer's vocabulary never occur in prompts but can be
  sampled in completions (they decode to nothing), which is what the benchmark needs: the same work
  for every trainer. Built once (seeded) and saved under `$OTHINKLAB_HOME`, so every measurement's
  process and both trainers load the same weights from disk (TRL's full fine-tuning loads its
  reference model from that path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REAL_VOCAB = 151_936
"""Qwen2-VL's vocabulary size (embedding rows), as in Qwen/Qwen2-VL-2B-Instruct's config."""
REALVOCAB_SPEC = {"hidden": 256, "layers": 8, "vocab_size": REAL_VOCAB, "seed": 0, "version": "v2"}
MODELS = ("realvocab", "tiny")


def realvocab_dir() -> Path:
    from othinklab.tiny import home

    s = REALVOCAB_SPEC
    return home() / f"bench-realvocab-{s['version']}-h{s['hidden']}-l{s['layers']}-seed{s['seed']}"


def ensure_realvocab() -> Path:
    """Build (once) and cache the ~48M real-vocabulary model; returns its directory."""
    path = realvocab_dir()
    if (path / "othinklab.json").exists():
        return path
    import torch
    from transformers import AutoModelForImageTextToText

    from othinklab import tiny
    from othinklab.rng import seed_everything

    s = REALVOCAB_SPEC
    tokenizer = tiny.build_tokenizer(tiny.SEED)
    processor = tiny.make_processor(tokenizer, tiny.build_image_processor())
    config = tiny.tiny_config(tokenizer, hidden=s["hidden"], layers=s["layers"])
    config.text_config.vocab_size = s["vocab_size"]
    head_dim = s["hidden"] // config.text_config.num_attention_heads  # 64: rotary sections must sum to 32
    config.text_config.rope_parameters["mrope_section"] = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    seed_everything(s["seed"])
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    return tiny.save_pretrained(model, processor, path, extra={"kind": "bench-realvocab", "parameters": params, **s})


def model_path(name: str) -> str:
    """What `othinklab.models.load_model` takes for a benchmark model name."""
    if name == "tiny":
        from othinklab.warmup import ensure_base

        return str(ensure_base())
    if name == "realvocab":
        return str(ensure_realvocab())
    raise ValueError(f"unknown benchmark model {name!r}; choose from {', '.join(MODELS)}")


def describe(name: str, model: Any) -> str:
    """One line: parameter count and vocabulary size."""
    params = sum(p.numel() for p in model.parameters())
    vocab = model.get_input_embeddings().weight.shape[0]
    return f"{name}: {params / 1e6:.1f}M parameters, vocabulary {vocab:,}"


def info(name: str) -> dict[str, Any]:
    path = Path(model_path(name)) / "othinklab.json"
    return json.loads(path.read_text()) if path.exists() else {}


QWEN2VL_2B_CONFIG = Path(__file__).resolve().parent / "qwen2vl_2b_config.json"
"""Qwen/Qwen2-VL-2B-Instruct's architecture (its config.json), for bench_gpu.py; weights are random."""


def qwen2vl_2b_dir(image_size: int = 448) -> Path:
    from othinklab.tiny import home

    return home() / f"bench-qwen2vl-2b-arch-v1-img{image_size}"


def ensure_qwen2vl_2b(image_size: int = 448, device: str = "cuda") -> Path:
    """Build (once, seeded, bfloat16) and cache Qwen2-VL-2B's architecture with random weights.

    The tokenizer is the embedded tiny one (no download); the config's special-token ids are set to its
    ids, everything else is the 2B config (2.2B parameters, vocabulary 151,936). The image processor is
    pinned to `image_size`^2 pixels (448 -> 32x32 patches -> 256 visual tokens).
    """
    path = qwen2vl_2b_dir(image_size)
    if (path / "othinklab.json").exists():
        return path
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig

    from othinklab import tiny
    from othinklab.rng import seed_everything

    raw = {k: v for k, v in json.loads(QWEN2VL_2B_CONFIG.read_text()).items() if not k.startswith("_")}
    tokenizer = tiny.build_tokenizer(tiny.SEED)
    processor = tiny.make_processor(tokenizer, tiny.build_image_processor(image_size))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    raw.update(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|image_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    config = Qwen2VLConfig.from_dict(raw)
    seed_everything(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    info = {"kind": "bench-qwen2vl-2b-arch", "parameters": params, "image_size": image_size, "vocab_size": 151936}
    out = tiny.save_pretrained(model, processor, path, extra=info)
    del model
    return out
