"""The embedded default: a tiny Qwen2-VL built offline from a seed, so everything runs with no download.

Why: a laptop CPU and the test suite need a real `Qwen2VLForConditionalGeneration` (same chat template,
image tokens, multimodal rotary positions, `generate`) that fits in seconds. Built here: a byte-level BPE
tokenizer trained on the synthetic tasks' text, Qwen2-VL's PIL image processor fixed to 112x112 (16 visual
tokens, one per 28x28 cell), and the model from a small config; docs/design.md has the sizes. No video
processor (it needs torchvision, absent beside the CPU torch wheel): `TinyQwen2VLProcessor` tolerates that.
The warmed-up *base* is made in `othinklab.warmup`; its cache directory is `base_dir`.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from othinklab.bounds import new_dir_mode
from othinklab.rng import preserved_rng, seed_everything

SEED = 0
"""Seed of the tiny model's tokenizer corpus and weights; the cache key includes it."""
IMAGE_SIZE = 112
"""Side of the square images the tiny processor expects (pixels); 112 = 4 grid cells of 28."""
VOCAB_SIZE = 640
"""The BPE trainer's upper bound on the vocabulary, special tokens included; the tasks' small corpus
stops it at 492 tokens, the size the model's embedding is built with."""
BUILD_VERSION = "v4"
"""Bump when the build recipe (here or in `othinklab.warmup`) changes, so stale caches are never loaded."""

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
"""Qwen2-VL's control tokens, in its order; the role and vision ones are never sampled (`sampling.NEVER_SAMPLED`)."""

# Qwen2-VL-Instruct's chat template, verbatim: the tiny model is prompted exactly like the real one.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2's pre-tokenizer regex: contractions, words, single digits, punctuation runs, whitespace.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def home() -> Path:
    """Where othinklab caches what it builds: `$OTHINKLAB_HOME`, else `~/.cache/othinklab`."""
    env = os.environ.get("OTHINKLAB_HOME")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "othinklab"


# --------------------------------------------------------------------------- tokenizer
def _corpus(seed: int) -> list[str]:
    """Text the tokenizer is trained on: task questions, reasoning, answers and the prompt template."""
    from othinklab.tasks import PROMPT_SUFFIX, make_task

    lines = ["You are a helpful assistant.", "system", "user", "assistant", PROMPT_SUFFIX]
    for name in ("counting", "geometry"):
        task = make_task(name)
        for split in task.splits:
            for s in task.samples(300, split=split, seed=seed):
                lines += [
                    s.problem + PROMPT_SUFFIX,
                    s.target(),
                    f"<think>{s.reasoning}</think>\n<answer>{s.answer}</answer>",
                ]
    return lines


def build_tokenizer(seed: int = SEED) -> Any:
    """Train the byte-level BPE tokenizer and wrap it as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# --------------------------------------------------------------------------- processor
PROCESSOR_MODULE = "processing_othinklab"
"""File name (without .py) of the processor code an export ships for `AutoProcessor(trust_remote_code=True)`."""
PROCESSOR_SOURCE = '''"""Qwen2-VL's processor without a video processor (shipped by othinklab exports).

Qwen2-VL's own processor insists on a video processor, which needs torchvision; where torchvision is
installed, `AutoProcessor.from_pretrained(path)` loads the standard `Qwen2VLProcessor` (named in
processor_config.json); without it, `AutoProcessor.from_pretrained(path, trust_remote_code=True)` loads this.
"""

from transformers import Qwen2VLProcessor


class TinyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without a video processor (Qwen2-VL's needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, video_processor=None, **kw):
        try:
            super().__init__(image_processor, tokenizer, video_processor, **kw)
        except (TypeError, ValueError):
            # ProcessorMixin insists on every attribute: set them by hand, as it would.
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.image_processor, self.tokenizer, self.video_processor = image_processor, tokenizer, None
            self.chat_template = kw.get("chat_template")
        if not getattr(self, "chat_template", None):  # saved beside the tokenizer, not the processor
            self.chat_template = getattr(tokenizer, "chat_template", None)

    @classmethod
    def get_attributes(cls):
        return ["image_processor", "tokenizer"]
'''
"""The processor class as source: defined once, run here and copied verbatim into every export."""


@functools.cache
def _processor_class() -> type:
    namespace: dict[str, Any] = {"__name__": f"othinklab.{PROCESSOR_MODULE}"}
    exec(compile(PROCESSOR_SOURCE, f"<othinklab {PROCESSOR_MODULE}.py>", "exec"), namespace)  # noqa: S102
    return namespace["TinyQwen2VLProcessor"]


def write_processor(processor: Any, folder: str | Path) -> None:
    """Save a processor so plain transformers loads it: tokenizer, image processor and chat template, a
    `processor_config.json` naming the standard `Qwen2VLProcessor` (what `AutoProcessor` loads where
    torchvision is installed) with an `auto_map` to the shipped video-less class for where it is not."""
    folder = Path(folder)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    (folder / f"{PROCESSOR_MODULE}.py").write_text(PROCESSOR_SOURCE, encoding="utf-8")
    auto_map = {"AutoProcessor": f"{PROCESSOR_MODULE}.TinyQwen2VLProcessor"}
    for name in ("tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():  # a stale internal class name here would make AutoProcessor fall back to a tokenizer
            data = json.loads(path.read_text(encoding="utf-8"))
            data["processor_class"] = "Qwen2VLProcessor"
            data.setdefault("auto_map", {}).update(auto_map)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    config = {"processor_class": "Qwen2VLProcessor", "auto_map": auto_map}
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def make_processor(tokenizer: Any, image_processor: Any) -> Any:
    """A Qwen2-VL processor from a tokenizer and image processor, with no video processor."""
    return _processor_class()(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_image_processor(image_size: int = IMAGE_SIZE) -> Any:
    """Qwen2-VL's PIL image processor pinned to `image_size`^2 pixels (no resizing surprises)."""
    from transformers import Qwen2VLImageProcessorPil

    px = image_size * image_size
    return Qwen2VLImageProcessorPil(min_pixels=px, max_pixels=px, size={"shortest_edge": px, "longest_edge": px})


# --------------------------------------------------------------------------- model
def tiny_config(tokenizer: Any, arch: str = "qwen2_vl", hidden: int = 128, layers: int = 2) -> Any:
    """A small Qwen2-VL (or Qwen2.5-VL) config whose special token ids match `tokenizer`."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    common = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=2, embed_dim=hidden, hidden_size=hidden, num_heads=4, mlp_ratio=2, patch_size=14)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(
            depth=2,
            hidden_size=hidden,
            out_hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_heads=4,
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose qwen2_vl or qwen2_5_vl")


def build_untrained(seed: int = SEED, arch: str = "qwen2_vl") -> tuple[Any, Any]:
    """The untrained tiny model and its processor, from `seed` alone (bit-identical on rebuild)."""
    from transformers import AutoModelForImageTextToText

    tokenizer = build_tokenizer(seed)
    processor = make_processor(tokenizer, build_image_processor())
    seed_everything(seed)
    model = AutoModelForImageTextToText.from_config(tiny_config(tokenizer, arch=arch), dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), processor


def save_pretrained(model: Any, processor: Any, path: str | Path, extra: dict | None = None) -> Path:
    """Save model, tokenizer and image processor to `path` atomically (temp dir, then rename).

    The processor's parts are saved separately because a Qwen2-VL processor without a video
    processor cannot `save_pretrained` itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        processor.tokenizer.save_pretrained(tmp)
        processor.image_processor.save_pretrained(tmp)
        if extra is not None:
            (tmp / "othinklab.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        tmp.chmod(new_dir_mode())  # mkdtemp makes 0700
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def untrained_dir(seed: int = SEED) -> Path:
    """Cache directory of the untrained tiny model."""
    return home() / f"tiny-init-{BUILD_VERSION}-seed{seed}"


def ensure_untrained(seed: int = SEED) -> Path:
    """Build (once) and cache the untrained tiny model; returns its directory. The build leaves the caller's
    RNGs as they were, so a seeded run draws the same whether it builds or loads."""
    path = untrained_dir(seed)
    if not (path / "othinklab.json").exists():
        with preserved_rng():
            model, processor = build_untrained(seed)
        save_pretrained(model, processor, path, extra={"kind": "tiny-init", "seed": seed, "version": BUILD_VERSION})
    return path


# --------------------------------------------------------------------------- where the base is cached
def base_dir(seed: int = SEED) -> Path:
    """Cache directory of the warmed-up tiny base."""
    return home() / f"tiny-base-{BUILD_VERSION}-seed{seed}"
