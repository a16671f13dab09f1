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


ARCH_DIR = Path(__file__).resolve().parent.parent / "configs" / "architectures"
"""The published config.json of each real architecture (architecture only; the weights are random)."""
REAL_ARCHS = {
    "Qwen2-VL-2B": ("qwen2-vl-2b.json", 112),
    "Qwen2.5-VL-3B": ("qwen2.5-vl-3b.json", 112),
    "Qwen3-VL-2B": ("qwen3-vl-2b.json", 128),
}
"""Name -> (config file, image side): 112 px is 16 visual tokens at patch 14, 128 px the same at Qwen3-VL's 16."""
BUILD_VERSION = "v2"
QWEN2VL_2B_CONFIG = ARCH_DIR / "qwen2-vl-2b.json"
"""Qwen/Qwen2-VL-2B-Instruct's architecture (its config.json), for bench_gpu.py; weights are random."""


def arch_config(name: str, tokenizer: Any) -> Any:
    """The transformers config of a real architecture, its special-token ids set to `tokenizer`'s."""
    from transformers import AutoConfig

    from othinklab import tiny

    raw = {k: v for k, v in json.loads((ARCH_DIR / REAL_ARCHS[name][0]).read_text()).items() if not k.startswith("_")}
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    special = dict(
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|image_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    text = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    raw.update(special)
    if "text_config" in raw:
        raw["text_config"] = {**raw["text_config"], **text}
    else:
        raw.update(text)
    kind = raw.pop("model_type")
    return AutoConfig.for_model(kind, **raw)


def arch_dir(name: str, image_size: int | None = None) -> Path:
    from othinklab.tiny import home

    side = image_size or REAL_ARCHS[name][1]
    return home() / f"real-{name.lower()}-random-{BUILD_VERSION}-img{side}"


def fill_random(model: Any, seed: int = 0, std: float = 0.02) -> None:
    """Seeded weights without transformers' per-module init: matrices uniform with standard deviation `std`
    (one generator, parameters in name order), norm weights 1, biases and other vectors 0."""
    import torch

    g = torch.Generator().manual_seed(seed)
    bound = std * 3**0.5
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.uniform_(-bound, bound, generator=g)
            elif "norm" in name or name.endswith(("ln_q.weight", "ln.weight")):
                p.fill_(1.0)
            else:
                p.zero_()


def build_random(config: Any, seed: int = 0) -> Any:
    """The model of `config` in bfloat16 with seeded random weights, fast: parameters are created on the meta
    device (no per-module init), then given CPU storage and filled by one generator."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForImageTextToText

    with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies) are computed for real
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    for module in model.modules():
        for key, p in list(module._parameters.items()):
            if p is not None and p.device.type == "meta":
                module._parameters[key] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype), requires_grad=False)
    model.tie_weights()
    fill_random(model, seed)
    return model.eval()


def ensure_arch(name: str, image_size: int | None = None) -> Path:
    """Build (once, seeded, bfloat16 safetensors) and cache a real architecture with random weights.

    The tokenizer is the embedded tiny one (no download), the config's special-token ids its ids;
    everything else is the published config. The image processor is pinned to `image_size`^2 pixels.
    Written to a temporary directory and renamed when complete (`tiny.save_pretrained`), so an
    interrupted build leaves nothing a later run trusts.
    """
    path = arch_dir(name, image_size)
    if (path / "othinklab.json").exists():
        return path
    from othinklab import tiny

    side = image_size or REAL_ARCHS[name][1]
    tokenizer = tiny.build_tokenizer(tiny.SEED)
    config = arch_config(name, tokenizer)
    image = tiny.build_image_processor(side)
    vision = config.vision_config
    image.patch_size, image.merge_size = vision.patch_size, vision.spatial_merge_size
    processor = tiny.make_processor(tokenizer, image)
    model = build_random(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    params = sum(p.numel() for p in model.parameters())
    info = {"kind": "real-arch-random", "name": name, "parameters": params, "image_size": side, "seed": 0}
    out = tiny.save_pretrained(model, processor, path, extra=info)
    del model
    return out


def qwen2vl_2b_dir(image_size: int = 448) -> Path:
    return arch_dir("Qwen2-VL-2B", image_size)


def ensure_qwen2vl_2b(image_size: int = 448, device: str = "cpu") -> Path:
    """Qwen2-VL-2B's architecture with random weights (see `ensure_arch`); `device` is kept for callers and
    ignored: the fast build needs no accelerator."""
    return ensure_arch("Qwen2-VL-2B", image_size)
