"""The shape numbers of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model, read from its config without loading weights.

Why: the memory and time model (`othinklab.budget`) needs layer sizes, not a model. They come from the
`config.json` of the cached tiny model, a local directory or, for a hub id, the local Hugging Face cache
(nothing is downloaded); Qwen/Qwen2-VL-2B-Instruct's ships here (`KNOWN_CONFIGS`) for use before any download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from othinklab.errors import UserError

QWEN2VL_2B = {
    "model_type": "qwen2_vl",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}
"""Qwen/Qwen2-VL-2B-Instruct's config.json, the fields the estimate reads (2.21B parameters)."""
KNOWN_CONFIGS = {"Qwen/Qwen2-VL-2B-Instruct": QWEN2VL_2B, "Qwen/Qwen2-VL-2B": QWEN2VL_2B}
"""Hub ids whose architecture is known without their config.json on disk."""


@dataclass(frozen=True)
class Architecture:
    """Sizes of the language model and the vision tower (names as in transformers' Qwen2-VL configs)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    vision_depth: int
    vision_dim: int
    vision_mlp_dim: int
    vision_out: int
    vision_gated: bool
    """Qwen2.5-VL's vision MLP is SwiGLU (gate/up/down) with RMSNorm; Qwen2-VL's is fc1/fc2 with LayerNorm."""
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    in_channels: int = 3
    attention_bias: bool = True
    """q/k/v biases (Qwen2-VL, Qwen2.5-VL); Qwen3-VL has none but normalises queries and keys per head."""
    qk_norm: bool = False
    vision_mlp_names: tuple[str, str] = ("fc1", "fc2")
    """The non-gated vision MLP's layers: `fc1`/`fc2` (Qwen2-VL), `linear_fc1`/`linear_fc2` (Qwen3-VL)."""
    vision_positions: int = 0
    """Qwen3-VL's learned vision position embeddings (rows of `vision_dim`); 0 elsewhere."""
    deepstack: int = 0
    """Qwen3-VL's extra patch mergers feeding intermediate vision features to the first decoder layers."""

    # ------------------------------------------------------------------ parameter counts
    def text_linears(self) -> dict[str, tuple[int, int]]:
        """One decoder layer's projections as `name -> (in_features, out_features)`."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def vision_linears(self) -> dict[str, tuple[int, int]]:
        """One vision block's linear layers as `name -> (in_features, out_features)`."""
        e, m = self.vision_dim, self.vision_mlp_dim
        mlp = (
            {"gate_proj": (e, m), "up_proj": (e, m), "down_proj": (m, e)}
            if self.vision_gated
            else {self.vision_mlp_names[0]: (e, m), self.vision_mlp_names[1]: (m, e)}
        )
        return {"qkv": (e, 3 * e), "proj": (e, e), **mlp}

    @property
    def text_linear_params(self) -> int:
        """Weights of all decoder projections: what 4-bit quantises and what each token multiplies through."""
        return self.num_layers * sum(a * b for a, b in self.text_linears().values())

    @property
    def text_other_params(self) -> int:
        """Embeddings, an untied LM head, q/k/v biases and RMSNorm weights."""
        h, heads = self.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        per_layer = heads * self.attention_bias + 2 * h + 2 * self.head_dim * self.qk_norm
        return embed + self.num_layers * per_layer + h

    @property
    def merger_linear_params(self) -> int:
        """The patch merger's two linear layers (run once per merged visual token)."""
        c = self.vision_dim * self.merge_size**2
        return c * c + c * self.vision_out

    @property
    def vision_linear_params(self) -> int:
        """Linear weights of the vision blocks (run once per patch)."""
        return self.vision_depth * sum(a * b for a, b in self.vision_linears().values())

    @property
    def vision_params(self) -> int:
        """Everything in the vision tower: patch embedding, blocks (with biases and norms), merger."""
        e, c = self.vision_dim, self.vision_dim * self.merge_size**2
        patch = self.in_channels * self.temporal_patch_size * self.patch_size**2 * e
        patch += e * (self.vision_positions > 0) + self.vision_positions * e  # Qwen3-VL: a patch bias, positions
        biases = sum(b for _, b in self.vision_linears().values())
        norms = 2 * e if self.vision_gated else 4 * e
        merger_norm = e if self.vision_gated else 2 * e
        merger = self.merger_linear_params + c + self.vision_out
        deepstack = self.deepstack * (merger + 2 * c)  # LayerNorm over the merged (4x wider) features
        return (
            patch + self.vision_linear_params + self.vision_depth * (biases + norms) + merger + merger_norm + deepstack
        )

    @property
    def parameters(self) -> int:
        """All parameters (what `sum(p.numel() for p in model.parameters())` reports)."""
        return self.text_linear_params + self.text_other_params + self.vision_params

    def lora_params(self, r: int, targets: tuple[str, ...], include_vision: bool = False) -> int:
        """LoRA A and B matrices of rank `r` on every projection named in `targets`."""
        n = self.num_layers * sum(r * (a + b) for name, (a, b) in self.text_linears().items() if name in targets)
        if include_vision:
            n += self.vision_depth * sum(
                r * (a + b) for name, (a, b) in self.vision_linears().items() if name in targets
            )
        return n


def from_config_dict(raw: dict[str, Any]) -> Architecture:
    """An `Architecture` from a Qwen2-VL / Qwen2.5-VL config.json (flat or with `text_config`)."""
    text = {**raw, **(raw.get("text_config") or {})}
    vision = raw.get("vision_config") or {}
    try:
        h, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        qwen3 = "deepstack_visual_indexes" in vision or str(raw.get("model_type", "")).startswith("qwen3")
        gated = "intermediate_size" in vision and "embed_dim" not in vision and not qwen3
        e = int(vision["embed_dim"] if "embed_dim" in vision else vision["hidden_size"])
        return Architecture(
            vocab_size=int(text["vocab_size"]),
            hidden_size=h,
            intermediate_size=int(text["intermediate_size"]),
            num_layers=int(text["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or h // heads),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            vision_depth=int(vision["depth"]),
            vision_dim=e,
            vision_mlp_dim=int(vision["intermediate_size"])
            if "intermediate_size" in vision
            else int(e * vision.get("mlp_ratio", 4)),
            vision_out=int(vision["out_hidden_size"] if "out_hidden_size" in vision else vision.get("hidden_size", h)),
            vision_gated=gated,
            patch_size=int(vision.get("patch_size", 14)),
            merge_size=int(vision.get("spatial_merge_size", 2)),
            temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
            in_channels=int(vision.get("in_chans", vision.get("in_channels", 3))),
            attention_bias=bool(text.get("attention_bias", not qwen3)),
            qk_norm=qwen3,
            vision_mlp_names=("linear_fc1", "linear_fc2") if qwen3 else ("fc1", "fc2"),
            vision_positions=int(vision.get("num_position_embeddings", 0)) if qwen3 else 0,
            deepstack=len(vision.get("deepstack_visual_indexes") or ()) if qwen3 else 0,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"the model config lacks or mangles a field the estimate needs ({exc}); is it a Qwen2-VL config?"
        ) from None


def _read(path: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"model.name={name!r}: cannot read {str(path)!r} ({exc})") from None


def _tiny_config(name: str) -> dict[str, Any]:
    """The tiny model's config: from its cache when built, else rebuilt from the recipe (no weights)."""
    from othinklab import tiny

    path = (tiny.base_dir() if name == "tiny" else tiny.untrained_dir()) / "config.json"
    if path.exists():
        return _read(path, name)
    return tiny.tiny_config(tiny.build_tokenizer(tiny.SEED)).to_dict()


def _hub_cached_config(name: str) -> Path | None:
    """The hub id's config.json in the local Hugging Face cache, or None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id, or no cache: treat as absent
        return None
    return Path(found) if isinstance(found, str) else None


def load_architecture(name: str) -> Architecture:
    """The architecture of `model.name` (`tiny`, `tiny-init`, a directory or a hub id), without weights."""
    if name in ("tiny", "tiny-init"):
        return from_config_dict(_tiny_config(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"model.name={name!r}: the directory has no config.json")
        return from_config_dict(_read(path / "config.json", name))
    cached = _hub_cached_config(name)
    if cached is not None:
        return from_config_dict(_read(cached, name))
    if name in KNOWN_CONFIGS:
        return from_config_dict(KNOWN_CONFIGS[name])
    raise UserError(
        f"model.name={name!r}: its config.json is not on this machine (not a directory, not in the Hugging Face "
        f"cache) and the estimate downloads nothing; known without it: {', '.join(KNOWN_CONFIGS)}"
    )
