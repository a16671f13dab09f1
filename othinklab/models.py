"""Loading the policy: the embedded tiny default or any Qwen2-VL / Qwen2.5-VL checkpoint, with LoRA and 4-bit.

Why: one function serves the laptop and the GPU. `"tiny"` is the embedded partly competent base, `"tiny-init"`
the untrained network (`othinklab.tiny`); anything else goes through transformers. Under LoRA the reference
is the same weights with the adapter disabled, so only full fine-tuning makes a frozen copy.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch

from othinklab.config import DTYPES as DTYPE_NAMES
from othinklab.errors import UserError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Default LoRA targets: the language model's attention and MLP projections."""
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
"""`model.dtype` names (the config's list) -> torch dtypes."""
VISION_MODULE_HINTS = ("visual", "vision")
SKIP_4BIT = ("lm_head", "visual", "model.visual")
"""Modules 4-bit leaves in `model.dtype`: the head and the vision tower. Both spellings, as transformers 5
matches a prefix or suffix (`visual` would miss `model.visual.blocks...`), older versions a substring."""
GC_KWARGS = {"use_reentrant": False}
"""Non-reentrant checkpointing: no input needs `requires_grad`, so a frozen vision tower runs no backward."""


def _processor_for(path: str | Path, max_pixels: int | None = None) -> Any:
    """AutoProcessor, or tokenizer + PIL image processor where the video processor cannot load."""
    from transformers import AutoProcessor, AutoTokenizer, Qwen2VLImageProcessorPil

    from othinklab.tiny import make_processor

    try:
        processor = AutoProcessor.from_pretrained(path)
    except ImportError:  # Qwen2-VL's video processor needs torchvision, absent beside the CPU torch wheel
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        processor = make_processor(
            AutoTokenizer.from_pretrained(path), Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
        )
    if max_pixels and hasattr(processor.image_processor, "max_pixels"):
        current = processor.image_processor.max_pixels or max_pixels
        processor.image_processor.max_pixels = min(current, max_pixels)
    return processor


def _resolve(name_or_path: str) -> str:
    """The tiny names map to their cache directories (built on first use); others pass through."""
    from othinklab import tiny, warmup

    if name_or_path == "tiny":
        return str(warmup.ensure_base())
    if name_or_path == "tiny-init":
        return str(tiny.ensure_untrained())
    return name_or_path  # a run directory as a model is resolved above this loader (`cli`, `export.run_as_model`)


def load_model(
    name_or_path: str | Any = "tiny",
    dtype: str = "float32",
    load_in_4bit: bool = False,
    lora: bool = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_target_modules: tuple[str, ...] | list[str] = LORA_TARGETS,
    lora_include_vision: bool = False,
    gradient_checkpointing: bool = False,
    max_pixels: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """`(model, processor)` for the tiny default, a hub id or a local directory, optionally LoRA / 4-bit.

    `load_model(cfg.model)` takes every setting from a `ModelConfig` (the keyword arguments are then
    ignored, except `device`).
    """
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    if not isinstance(name_or_path, str | Path):  # a ModelConfig: its fields are named as these parameters
        names = [k for k in inspect.signature(load_model).parameters if k not in ("name_or_path", "device")]
        options = {k: getattr(name_or_path, k) for k in names}
        return load_model(name_or_path.name, device=device, **options)

    if dtype not in DTYPES:
        raise UserError(f"model.dtype={dtype!r} is invalid: choose one of {', '.join(DTYPES)}")
    path = _resolve(name_or_path)
    if not (Path(path).is_dir() or ("/" in path and not Path(path).exists() and path.count("/") == 1)):
        raise UserError(
            f"model.name={name_or_path!r}: no such directory, and not a hub id of the form owner/name; "
            "use `tiny`, `tiny-init`, a hub id such as Qwen/Qwen2-VL-2B-Instruct, or a local model directory"
        )
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[dtype],
            llm_int8_skip_modules=list(SKIP_4BIT),
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if load_in_4bit or str(device) != "cpu":
        kwargs["device_map"] = {"": str(device) if str(device) != "cuda" else 0}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: a config.json without a known model_type, or mangled
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise UserError(f"model.name={name_or_path!r} could not be loaded (check its config.json): {detail}") from None
    if load_in_4bit:
        _keep_cpu_4bit_trainable(model)
    processor = _processor_for(path, max_pixels)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 (the old name warns)
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=dict(GC_KWARGS))
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(GC_KWARGS))
        model.config.use_cache = False
    if lora:
        model = add_lora(
            model,
            lora_r,
            lora_alpha,
            lora_dropout,
            tuple(lora_target_modules),
            lora_include_vision,
            load_in_4bit,
            gradient_checkpointing,
        )
    return model, processor


def _keep_cpu_4bit_trainable(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for CPU inference on AVX512-BF16 machines.

    Its packed CPU path adds the bias in place, which breaks the next forward *with* gradients (rollouts
    run without gradients, the policy pass with them), so keep every layer on the standard 4-bit path.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_targets(model: Any, names: tuple[str, ...], include_vision: bool = False) -> list[str]:
    """Full module paths of the linear layers named `names`, in the language model (and vision tower)."""
    out = []
    linear = (torch.nn.Linear, _bnb_linear())
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if leaf in names and isinstance(module, linear):
            if include_vision or not any(h in path for h in VISION_MODULE_HINTS):
                out.append(path)
    return out


def _bnb_linear() -> type:
    try:
        import bitsandbytes as bnb

        return bnb.nn.Linear4bit
    except Exception:  # noqa: BLE001 - bitsandbytes missing or without a backend: no 4-bit layers exist
        return torch.nn.Linear


def add_lora(
    model: Any,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: tuple[str, ...] = LORA_TARGETS,
    include_vision: bool = False,
    quantized: bool = False,
    gradient_checkpointing: bool = False,
) -> Any:
    """Wrap `model` with peft LoRA adapters on `target_modules` (language model only by default).

    A 4-bit base skips peft's `prepare_model_for_kbit_training`: it upcasts every non-quantised weight to
    float32 (0.9B parameters x 2 bytes more on Qwen2-VL-2B in bfloat16) and re-enables checkpointing without
    `use_reentrant`. Its one needed job, freezing the base, is done here (adapters are float32, see
    `othinklab.precision`); the input-gradient hooks are removed: with them the frozen vision tower ran a
    backward for every repeated image in the policy pass.
    """
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, target_modules, include_vision)
    if not targets:
        raise UserError(f"model.lora_target_modules={list(target_modules)!r} matched no linear layer of the model")
    if quantized:
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing and hasattr(model, "disable_input_require_grads"):
            model.disable_input_require_grads()  # non-reentrant checkpointing needs no input requires_grad
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    return get_peft_model(model, config)


def is_lora(model: Any) -> bool:
    """True for a peft model (its reference is the same model with the adapter disabled)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def make_reference(model: Any) -> Any | None:
    """The frozen reference for full fine-tuning (a copy), or None under LoRA (adapter disabled instead)."""
    if is_lora(model):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
