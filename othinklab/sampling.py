"""Sampling: prompts with images through the processor, then G completions per prompt from one shared prefill.

Why: sampling dominates a GRPO step. `sample_groups` encodes each prompt's image and prefills its prompt
**once**, repeats the KV cache G times and decodes the G continuations together, instead of pushing G
copies of the image through the vision tower as `generate(num_return_sequences=G)` does. Decoding writes
into a KV cache and key mask allocated once, and draws each token by inverting the CDF with one random
number per row (not one per vocabulary entry, as `torch.multinomial` does).

Simplified versus `transformers.generate`: only temperature / top-k / top-p sampling and greedy decoding
(no beams, no repetition penalties). Qwen's vision and role control tokens are never sampled: a model
that emits `<|image_pad|>` would crash the next forward ("image features and image tokens do not match").

The shared prefill relies on Qwen-VL internals (`rope_deltas`, a separate `language_model`), so only
`SHARED_PREFILL_TYPES` use it; any other architecture falls back to `generate_groups` (`transformers.generate`
with the same prompts, stop and banned tokens, seeded), logged once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from othinklab.errors import DataError
from othinklab.logprobs import text_model_parts
from othinklab.tasks.base import Sample

STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Either ends a completion (Qwen2-VL's generation config lists both as EOS)."""
NEVER_SAMPLED = ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
"""Control tokens masked out of every sampling distribution."""
SHARED_PREFILL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""Model types the shared-prefill decoder supports (tested: greedy decoding equals `generate`)."""

log = logging.getLogger("othinklab")
_FALLBACK_LOGGED: set[str] = set()


def supports_shared_prefill(model: Any) -> bool:
    """True when `model` (or the model inside a peft wrapper) is one of `SHARED_PREFILL_TYPES`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(base, "config", None), "model_type", None) in SHARED_PREFILL_TYPES


def messages_for(sample: Sample) -> list[dict[str, Any]]:
    """R1-V's user turn: the image first, then the question with the format instruction; no system prompt."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.prompt_text}]}]


def prompt_text(processor: Any, sample: Sample) -> str:
    """The chat-templated prompt string, ending with the assistant header."""
    return processor.apply_chat_template(messages_for(sample), add_generation_prompt=True, tokenize=False)


def encode_prompts(
    processor: Any, samples: list[Sample], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Tokenise prompts and preprocess images as one left-padded batch (ready for the model)."""
    tok = processor.tokenizer
    old_side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = processor(
            text=[prompt_text(processor, s) for s in samples],
            images=[s.image.convert("RGB") for s in samples],
            return_tensors="pt",
            padding=True,
        )
    finally:
        tok.padding_side = old_side
    return {k: v.to(device) for k, v in enc.items()}


def token_ids(processor: Any, names: tuple[str, ...]) -> list[int]:
    """Ids of the named special tokens that exist in this tokenizer's vocabulary."""
    tok = processor.tokenizer
    vocab = tok.get_vocab()
    return [vocab[n] for n in names if n in vocab]


@dataclass
class RowShard:
    """This process's rows of a batch sampled across data-parallel processes.

    Sampling draws the random numbers of the *whole* batch (`total` rows) and uses rows `start:start +
    rows`, and decoding runs until every process's rows are done (`all_done`), so N processes draw
    exactly the tokens one process would: the same seed gives the same run at any world size.
    """

    start: int
    total: int
    all_done: Callable[[torch.Tensor], bool]


@dataclass
class Rollout:
    """G completions for each of B prompts; rows `[g*G:(g+1)*G]` belong to prompt g."""

    prompt: dict[str, torch.Tensor]
    """The encoded prompts (B rows), as `encode_prompts` returned them."""
    completion_ids: torch.Tensor
    """(B*G, T) sampled token ids, padded after the stop token."""
    completion_mask: torch.Tensor
    """(B*G, T) 1 for tokens that count (up to and including the stop token)."""
    texts: list[str]
    """Decoded completions, special tokens removed."""
    truncated: torch.Tensor
    """(B*G,) True where the completion hit `max_new_tokens` without a stop token."""
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample a group: the settings both samplers (shared prefill, `generate`) take."""

    num_generations: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    stop_at_eos: bool = True
    """False masks the stop tokens out too, so every completion runs to `max_new_tokens`."""


@torch.no_grad()
def sample_groups(
    model: Any,
    processor: Any,
    samples: list[Sample],
    num_generations: int = 8,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
    shard: RowShard | None = None,
) -> Rollout:
    """Sample `num_generations` completions per sample from one shared prefill per prompt (see `SamplingParams`;
    benchmarks use `stop_at_eos=False` to compare equal work)."""
    was_training = model.training
    model.eval()  # no dropout while sampling; and gradient checkpointing turns the KV cache off in train mode
    sampler = _sample_groups if supports_shared_prefill(model) else generate_groups
    if sampler is generate_groups:
        _log_fallback(model)
    params = SamplingParams(num_generations, max_new_tokens, temperature, top_k, top_p, greedy, stop_at_eos)
    try:
        return sampler(model, processor, samples, params, generator, shard)
    finally:
        model.train(was_training)


def _sample_groups(
    model: Any,
    processor: Any,
    samples: list[Sample],
    params: SamplingParams,
    generator: torch.Generator | None = None,
    shard: RowShard | None = None,
) -> Rollout:
    """Shared prefill per prompt, then G continuations decoded together from its repeated KV cache."""
    p, max_new_tokens, G = params, params.max_new_tokens, int(params.num_generations)
    device, enc, stop_ids, banned = _prepare(model, processor, samples, p)
    backbone, lm_head = text_model_parts(model)
    stop = torch.tensor(stop_ids, device=device, dtype=torch.long)
    banned_t = torch.tensor(banned, device=device, dtype=torch.long) if banned else None
    pad_id = processor.tokenizer.pad_token_id

    backbone.rope_deltas = None  # stale deltas from an earlier batch must not leak in
    out = backbone(**enc, use_cache=True)
    cache = out.past_key_values
    # Share the prefill: repeat the cache, the mask and the rotary offsets G times.
    cache.batch_repeat_interleave(G)
    prompt_mask = enc["attention_mask"].repeat_interleave(G, dim=0)
    deltas = backbone.rope_deltas.repeat_interleave(G, dim=0)
    hidden = out.last_hidden_state[:, -1].repeat_interleave(G, dim=0)
    backbone.rope_deltas = None
    rows = prompt_mask.shape[0]
    _preallocate(cache, max_new_tokens)
    step = _DecodeStep(backbone, cache, prompt_mask, max_new_tokens)
    # Qwen2-VL's text positions count real (unpadded) tokens, offset by the prefill's rope deltas:
    # generated token t sits at (real prompt tokens + t + delta) on all three rotary axes.
    base = (prompt_mask.sum(dim=1, keepdim=True) + deltas).view(1, rows, 1)
    ids = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device) if p.stop_at_eos else None
    # A host sync per token is cheap on CPU; on an accelerator check for "all done" every few tokens.
    check_every = 1 if device.type == "cpu" or shard is not None else 8
    n = max_new_tokens
    for t in range(max_new_tokens):
        logits = lm_head(hidden)
        if logits.dtype != torch.float32:
            logits = logits.float()
        if banned_t is not None:
            logits.index_fill_(1, banned_t, float("-inf"))
        if p.greedy:
            nxt = logits.argmax(dim=-1)
        else:
            nxt = _draw(_probs(logits, p.temperature, p.top_k, p.top_p), generator, shard)
        if done is not None:
            nxt.masked_fill_(done, pad_id)
            done |= torch.isin(nxt, stop)
        ids[:, t] = nxt
        if t == max_new_tokens - 1:
            break
        if done is not None and (t + 1) % check_every == 0:
            if shard.all_done(done) if shard else bool(done.all()):
                n = t + 1
                break
        hidden = step(nxt, base + t, t)
    return _rollout(processor, enc, ids[:, :n], stop_ids, G)


def _prepare(
    model: Any, processor: Any, samples: list[Sample], p: SamplingParams
) -> tuple[torch.device, dict[str, torch.Tensor], list[int], list[int]]:
    """(device, encoded prompts, stop token ids, banned token ids) of a sampling call; prompts too long for the
    model's context are refused."""
    device = next(model.parameters()).device
    enc = encode_prompts(processor, samples, device)
    check_context(model, enc, samples, p.max_new_tokens)
    stop_ids = token_ids(processor, STOP_TOKENS)
    return device, enc, stop_ids, token_ids(processor, NEVER_SAMPLED) + ([] if p.stop_at_eos else stop_ids)


def _rollout(processor: Any, enc: dict[str, torch.Tensor], ids: torch.Tensor, stop_ids: list[int], G: int) -> Rollout:
    """The completions cut after their first stop token: ids padded there, the mask up to and including it."""
    is_stop = torch.isin(ids, torch.tensor(stop_ids, device=ids.device, dtype=torch.long))
    after_stop = (is_stop.long().cumsum(dim=1) - is_stop.long()) > 0
    ids = ids.masked_fill(after_stop, processor.tokenizer.pad_token_id)
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Rollout(enc, ids, (~after_stop).long(), texts, ~is_stop.any(dim=1), G)


def _log_fallback(model: Any) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kind = str(getattr(getattr(base, "config", None), "model_type", type(base).__name__))
    if kind not in _FALLBACK_LOGGED:
        _FALLBACK_LOGGED.add(kind)
        log.warning(
            "model type %r is not one the shared-prefill sampler supports (%s): rollouts use transformers' "
            "generate instead (same sampling rules, seeded; slower: the prompt is encoded G times)",
            kind,
            ", ".join(SHARED_PREFILL_TYPES),
        )


def generate_groups(
    model: Any,
    processor: Any,
    samples: list[Sample],
    params: SamplingParams,
    generator: torch.Generator | None = None,
    shard: RowShard | None = None,
) -> Rollout:
    """`sample_groups` through `model.generate(num_return_sequences=G)`: the fallback for other architectures.

    The checkpoint's own generation defaults (repetition penalty, its top-k/top-p) are not used: a fresh
    `GenerationConfig` carries exactly these settings. The global RNG is seeded from `generator` inside a
    forked RNG state, so results are reproducible and the caller's random stream moves by one draw only.
    `shard` is accepted for the signature's sake; each rank then samples its rows independently.
    """
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    p, G = params, int(params.num_generations)
    device, enc, stop_ids, banned = _prepare(model, processor, samples, p)

    class _Ban(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            scores[:, banned] = float("-inf")
            return scores

    gen_cfg = GenerationConfig(
        max_new_tokens=p.max_new_tokens,
        min_new_tokens=0 if p.stop_at_eos else p.max_new_tokens,
        do_sample=not p.greedy,
        num_return_sequences=G,
        pad_token_id=processor.tokenizer.pad_token_id,
        eos_token_id=stop_ids if p.stop_at_eos else None,
        **({} if p.greedy else {"temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p}),
    )
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(**enc, generation_config=gen_cfg, logits_processor=LogitsProcessorList([_Ban()]))
    return _rollout(processor, enc, out[:, enc["input_ids"].shape[1] :], stop_ids, G)


def check_context(model: Any, enc: dict[str, torch.Tensor], samples: list[Sample], max_new_tokens: int) -> None:
    """Refuse prompts that cannot fit the model's context with their completion, naming the sample."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    limit = getattr(cfg, "max_position_embeddings", None)
    if not limit:
        return
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    for sample, n in zip(samples, lengths):
        if n + max_new_tokens > limit:
            raise DataError(
                f"prompt of sample {sample.id!r} is {n} tokens (image included); with {max_new_tokens} completion "
                f"tokens it exceeds the model's context of {limit} tokens: shorten the question, lower "
                "model.max_pixels or grpo.max_completion_length"
            )


def _preallocate(cache: Any, extra: int) -> None:
    """Give each growing KV-cache layer room for `extra` more tokens, written in place.

    transformers' `DynamicLayer` concatenates every step, copying the whole cache (quadratic in the
    completion length: half of a long rollout's time on the tiny model); here each step writes its keys
    and values into a buffer allocated once and attention reads a view of the filled part.
    """
    from transformers.cache_utils import DynamicLayer

    class _Preallocated(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.length = keys.shape[-2]
            shape = (*keys.shape[:-2], self.length + extra, keys.shape[-1])
            self.kbuf = keys.new_empty(shape)
            self.vbuf = values.new_empty((*shape[:-1], values.shape[-1]))
            self.kbuf[..., : self.length, :] = keys
            self.vbuf[..., : self.length, :] = values
            self.keys, self.values = self.kbuf[..., : self.length, :], self.vbuf[..., : self.length, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            n = key_states.shape[-2]
            self.kbuf[..., self.length : self.length + n, :] = key_states
            self.vbuf[..., self.length : self.length + n, :] = value_states
            self.length += n
            self.keys, self.values = self.kbuf[..., : self.length, :], self.vbuf[..., : self.length, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

    layers = getattr(cache, "layers", None)
    if not layers:
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys is not None and layer.keys.numel():
            layers[i] = _Preallocated(layer.keys, layer.values)


class _DecodeStep:
    """One decoding step of the text model on the shared, repeated KV cache: `step(tokens, pos, t)`.

    Calls the language model directly (the multimodal wrapper has nothing to add after the prefill)
    with a key mask allocated once for all steps: under SDPA the boolean 4-D mask that transformers
    would rebuild every step is a slice of it; other attention kernels get the 2-D mask slice.
    """

    def __init__(self, backbone: Any, cache: Any, prompt_mask: torch.Tensor, max_new_tokens: int):
        rows, P = prompt_mask.shape
        text = getattr(backbone, "language_model", None)
        self.model, self.cache, self.P = backbone if text is None else text, cache, P
        mask = torch.ones(rows, P + max_new_tokens, dtype=prompt_mask.dtype, device=prompt_mask.device)
        mask[:, :P] = prompt_mask
        self.mask2d = mask
        config = getattr(text, "config", None)
        layer_types = set(getattr(config, "layer_types", None) or ())
        self.mask4d = None
        if getattr(config, "_attn_implementation", None) == "sdpa" and layer_types == {"full_attention"}:
            self.mask4d = mask.bool()[:, None, None, :]

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, t: int) -> torch.Tensor:
        rows = tokens.shape[0]
        kv = self.P + t + 1  # keys after this token is added
        mask = self.mask2d[:, :kv] if self.mask4d is None else {"full_attention": self.mask4d[..., :kv]}
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            past_key_values=self.cache,
            position_ids=pos.expand(3, rows, 1),
            use_cache=True,
        )
        return out.last_hidden_state[:, -1]


def _probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Sampling distribution from `logits` (modified in place; they are this step's own): temperature, then
    top-k, then nucleus filtering (filtered entries get probability 0)."""
    if temperature != 1.0:
        logits.div_(temperature)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        remove = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def _draw(probs: torch.Tensor, generator: torch.Generator | None, shard: RowShard | None) -> torch.Tensor:
    """One token per row from `probs` by inverting its CDF with one uniform number per row.

    Why not `torch.multinomial`: it draws an exponential random number for *every* vocabulary entry
    (the race `argmax(p / E)`), 152k per row per token with Qwen's vocabulary, which dominated
    sampling time; this draws one per row. With a shard, the uniforms of the whole batch (`shard.total`
    rows) are drawn and this shard's rows kept, so N processes draw exactly what one process does.
    """
    rows = probs.shape[0]
    total, start = (shard.total, shard.start) if shard is not None else (rows, 0)
    u = torch.rand((total, 1), generator=generator, device=probs.device, dtype=torch.float64)
    return _inverse_cdf(probs, u[start : start + rows])


def _block_size(vocab: int) -> int:
    """Block length for the two-level CDF: the vocabulary itself when small, else a divisor near sqrt."""
    if vocab <= 4096:
        return vocab
    for k in range(math.isqrt(vocab), 4097):
        if vocab % k == 0:
            return k
    return 1024  # no convenient divisor: pad


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index `i` with `cdf[i-1] <= u * total < cdf[i]` per row (`u` in [0, 1), shape (rows, 1)).

    Two levels (block sums, then the chosen block's cumulative sum, in float64) keep it to one cheap
    pass over the vocabulary. A zero-probability token is never returned: the search takes the first
    index whose cumulative sum *exceeds* the target, and the target is kept below the block's total.
    """
    rows, vocab = probs.shape
    k = _block_size(vocab)
    nb = -(-vocab // k)
    if nb * k != vocab:
        probs = torch.nn.functional.pad(probs, (0, nb * k - vocab))
    blocks = probs.view(rows, nb, k)
    cum = blocks.sum(dim=-1).double().cumsum(dim=-1)  # (rows, nb)
    target = u * cum[:, -1:]
    b = torch.searchsorted(cum, target, right=True).clamp_(max=nb - 1)  # (rows, 1)
    before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
    inside = blocks.gather(1, b[:, :, None].expand(rows, 1, k)).squeeze(1).double().cumsum(dim=-1)
    last = inside[:, -1:]
    x = torch.minimum((target - before).clamp(min=0), torch.nextafter(last, torch.zeros_like(last)))
    j = torch.searchsorted(inside, x, right=True).clamp_(max=k - 1)
    return (b * k + j).squeeze(1)
