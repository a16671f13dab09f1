"""Per-token log-probs of sampled completions, differentiable, from one prompt pass per group.

Why: the policy, reference and old-policy passes of a GRPO step all need `log pi(token | prompt, prefix)`
for G completions of each prompt. `completion_logprobs` runs each prompt (image included) once per group
and repeats its KV cache for the G completions, gradients flowing back through the repeat into the shared
prompt, as sampling does; and it applies the LM head a few rows at a time, recomputing those logits in
the backward pass, so full-vocabulary float32 logits never exist for the whole batch, not even for the
gradient. The one formula, `logit[label] - logsumexp(logits)`, lives in `label_logprobs`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


def text_model_parts(model: Any) -> tuple[Any, Any]:
    """(the multimodal backbone returning hidden states, the LM head), through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def repeat_prompt(prompt: dict[str, torch.Tensor], group_size: int) -> dict[str, torch.Tensor]:
    """Repeat each prompt row (and its image patches) `group_size` times, for full-sequence forwards."""
    out = {}
    grid = prompt.get("image_grid_thw")
    for k, v in prompt.items():
        if k == "pixel_values" and grid is not None:
            per_image = grid.prod(dim=-1).tolist()
            chunks = torch.split(v, per_image)
            out[k] = torch.cat([c for c in chunks for _ in range(group_size)])
        else:
            out[k] = v.repeat_interleave(group_size, dim=0)
    return out


def completion_logprobs(
    model: Any,
    prompt: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int = 1,
    chunk_size: int = 8,
    disable_adapter: bool = False,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs `(B*G, T)` of `completion_ids` after their prompts; differentiable.

    `prompt` has B rows, each followed by `group_size` completions; the LM head runs on `chunk_size` rows
    at a time (see the module docstring). `disable_adapter=True` gives the reference model's log-probs
    under LoRA (same weights, adapters off, no second copy). `with_entropy=True` also returns the
    per-token entropy of the next-token distribution `(B*G, T)` (detached), from the same chunk logits.

    Under gradient checkpointing in training mode transformers drops the KV cache, so there the prompt
    is repeated G times and the full sequences run instead of sharing the prompt pass.
    """
    backbone, lm_head = text_model_parts(model)
    ctx = model.disable_adapter() if disable_adapter else nullcontext()
    with ctx:
        if _can_share_prefix(model, backbone):
            hidden = _completion_hidden_shared(backbone, prompt, completion_ids, group_size)
        else:
            hidden = _completion_hidden_full(backbone, prompt, completion_ids, completion_mask, group_size)
        return token_logprobs_from_hidden(lm_head, hidden, completion_ids, chunk_size, with_entropy)


def _can_share_prefix(model: Any, backbone: Any) -> bool:
    """The shared-prompt path needs Qwen-VL's separate text model and multimodal rotary offsets
    (`rope_deltas`); other architectures, and gradient checkpointing in training, take the full path."""
    text = getattr(backbone, "language_model", None)
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in (backbone, text) if m is not None)
    qwen_like = text is not None and hasattr(backbone, "rope_deltas")
    return qwen_like and not (checkpointing and model.training and torch.is_grad_enabled())


def _completion_hidden_shared(
    backbone: Any, prompt: dict[str, torch.Tensor], completion_ids: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Hidden states `(B*G, T, H)` that predict each completion token: prompt once, completions on its cache."""
    G, T = int(group_size), completion_ids.shape[1]
    backbone.rope_deltas = None
    out = backbone(**prompt, use_cache=True)
    deltas = backbone.rope_deltas
    backbone.rope_deltas = None
    cache = out.past_key_values
    last = out.last_hidden_state[:, -1:]  # predicts completion token 0
    prompt_mask = prompt["attention_mask"]
    if G > 1:
        cache.batch_repeat_interleave(G)
        last = last.repeat_interleave(G, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(G, dim=0)
        deltas = deltas.repeat_interleave(G, dim=0)
    if T == 1:
        return last
    rows = prompt_mask.shape[0]
    # Completion tokens 0..T-2 predict tokens 1..T-1; positions as in sampling (real prompt tokens + t + delta).
    # Tokens after a stop token are attended only by later ones, which are masked out of the loss too.
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(rows, T - 1)], dim=1)
    steps = torch.arange(T - 1, device=prompt_mask.device)
    pos = (prompt_mask.sum(dim=1, keepdim=True) + deltas + steps).view(1, rows, T - 1).expand(3, rows, T - 1)
    h = backbone.language_model(
        input_ids=completion_ids[:, :-1], attention_mask=mask, past_key_values=cache, position_ids=pos, use_cache=True
    ).last_hidden_state
    return torch.cat([last, h], dim=1)


def _completion_hidden_full(
    backbone: Any,
    prompt: dict[str, torch.Tensor],
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    group_size: int,
) -> torch.Tensor:
    """The same hidden states from full sequences (prompt repeated G times), for gradient checkpointing."""
    full = repeat_prompt(prompt, group_size) if group_size > 1 else dict(prompt)
    P = full["input_ids"].shape[1]
    T = completion_ids.shape[1]
    full["input_ids"] = torch.cat([full["input_ids"], completion_ids], dim=1)
    full["attention_mask"] = torch.cat(
        [full["attention_mask"], completion_mask.to(full["attention_mask"].dtype)], dim=1
    )
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat(
            [full["mm_token_type_ids"], torch.zeros_like(completion_ids, dtype=full["mm_token_type_ids"].dtype)], dim=1
        )
    backbone.rope_deltas = None
    hidden = backbone(**full, use_cache=False).last_hidden_state[:, P - 1 : P + T - 1]
    backbone.rope_deltas = None
    return hidden


def token_logprobs_from_hidden(
    lm_head: Any, hidden: torch.Tensor, labels: torch.Tensor, chunk_size: int = 8, with_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`log softmax(lm_head(hidden))[labels]`, `(N, T)`, `chunk_size` rows of full-vocabulary logits at a time
    (and, with `with_entropy`, each position's entropy from the same logits, detached).

    With gradients and a plain linear head, `_ChunkedLogprobs` keeps only the hidden states and the
    log-normalisers and recomputes each chunk's logits in the backward pass; otherwise autograd keeps
    every chunk's logits (LoRA or quantised heads) or none are kept (no gradients).
    """
    chunk = max(1, int(chunk_size))
    plain = type(lm_head) is torch.nn.Linear
    if torch.is_grad_enabled() and plain and (hidden.requires_grad or lm_head.weight.requires_grad):
        logp, entropy = _ChunkedLogprobs.apply(hidden, lm_head.weight, lm_head.bias, labels, chunk, with_entropy)
        return (logp, entropy) if with_entropy else logp
    out, ents = [], []
    for start in range(0, hidden.shape[0], chunk):
        logits = _at_least_f32(lm_head(hidden[start : start + chunk]))
        logp, lse = label_logprobs(logits, labels[start : start + chunk])
        out.append(logp)
        if with_entropy:
            with torch.no_grad():
                ents.append(entropy_from_logits(logits, lse))
    return (torch.cat(out, dim=0), torch.cat(ents, dim=0)) if with_entropy else torch.cat(out, dim=0)


def entropy_from_logits(logits: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Entropy `-sum p log p` of `softmax(logits)` over the last axis, given `lse = logsumexp(logits)`.

    >>> round(entropy_from_logits(torch.zeros(1, 4), torch.logsumexp(torch.zeros(1, 4), -1)).item(), 4)
    1.3863
    """
    return lse - (torch.exp(logits - lse.unsqueeze(-1)) * logits).sum(dim=-1)


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(log softmax(logits)[labels], logsumexp(logits))`: the one log-prob formula, `logit[label] - lse`.

    >>> lp, lse = label_logprobs(torch.tensor([[0.0, 0.0]]), torch.tensor([1])); lp.tolist()
    [-0.6931471824645996]
    """
    lse = torch.logsumexp(logits, dim=-1)
    return logits.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1) - lse, lse


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the log-softmax; float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _ChunkedLogprobs(torch.autograd.Function):
    """Token log-probs through a linear head without keeping full-vocabulary logits for the backward.

    Forward: per row chunk, logits -> `logit[label] - logsumexp`; saves hidden states and logsumexps.
    Backward: per chunk, recompute logits, `dlogits = g * (onehot(label) - softmax)`, then the hidden and
    weight (and bias) gradients; one extra head matmul buys the memory of the whole batch's logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk, with_entropy=False):  # noqa: ANN001, ANN205
        out, lses, ents = [], [], []
        with torch.no_grad():
            for start in range(0, hidden.shape[0], chunk):
                logits = _at_least_f32(torch.nn.functional.linear(hidden[start : start + chunk], weight, bias))
                logp, lse = label_logprobs(logits, labels[start : start + chunk])
                out.append(logp)
                lses.append(lse)
                if with_entropy:
                    ents.append(entropy_from_logits(logits, lse))
        ctx.save_for_backward(hidden, weight, bias, labels, torch.cat(lses, dim=0))
        ctx.chunk = chunk
        logp = torch.cat(out, dim=0)
        # The entropy is a by-product for logging: a second output without gradient (empty when not asked).
        entropy = torch.cat(ents, dim=0) if with_entropy else logp.new_empty(0)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_out, _grad_entropy=None):  # noqa: ANN001, ANN205
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=acc) if need_b and bias is not None else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            sl = slice(start, start + ctx.chunk)
            h = hidden[sl]
            logits = _at_least_f32(torch.nn.functional.linear(h, weight, bias))
            g = grad_out[sl].to(logits.dtype)
            # d logp[label] / d logits = onehot(label) - softmax, scaled by the incoming gradient
            dlogits = logits.sub_(lse[sl].unsqueeze(-1)).exp_().mul_(-g.unsqueeze(-1))
            dlogits.scatter_add_(-1, labels[sl].unsqueeze(-1), g.unsqueeze(-1))
            d = dlogits.to(weight.dtype)
            if need_h:
                grad_h[sl] = (d @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dlogits.flatten(0, -2).t().to(acc), h.flatten(0, -2).to(acc))
            if grad_b is not None:
                grad_b.add_(dlogits.flatten(0, -2).sum(dim=0).to(acc))
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None
