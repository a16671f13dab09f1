"""Shared-prefill group sampling: same tokens as `generate` under greedy (Qwen2-VL, Qwen2.5-VL, Qwen3-VL),
consistent log-probs, clean masks; the `generate` fallback for other architectures."""

from __future__ import annotations

import logging

import pytest
import torch
from archs import ARCHS, build
from prompt_samples import mixed_samples as _samples

from othinklab.logprobs import completion_logprobs
from othinklab.sampling import (
    NEVER_SAMPLED,
    STOP_TOKENS,
    SamplingParams,
    encode_prompts,
    generate_groups,
    sample_groups,
    supports_shared_prefill,
    token_ids,
)
from othinklab.tasks import make_task


def test_greedy_matches_generate_token_for_token(untrained):
    model, processor = untrained
    samples = _samples()
    enc = encode_prompts(processor, samples)
    banned = token_ids(processor, NEVER_SAMPLED)
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False, suppress_tokens=banned)[
        :, enc["input_ids"].shape[1] :
    ]
    r = sample_groups(model, processor, samples, num_generations=3, max_new_tokens=12, greedy=True)
    assert r.completion_ids.shape == (15, 12)
    for g in range(3):
        got = r.completion_ids[g::3]
        mask = r.completion_mask[g::3].bool()
        assert torch.equal(got[mask], ref[mask])


def test_logprobs_match_generate_logits(untrained):
    model, processor = untrained
    samples = _samples()
    enc = encode_prompts(processor, samples)
    out = model.generate(
        **enc,
        max_new_tokens=8,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        suppress_tokens=token_ids(processor, NEVER_SAMPLED),
    )
    raw = torch.stack(out.logits, 1).log_softmax(-1)
    r = sample_groups(model, processor, samples, num_generations=1, max_new_tokens=8, greedy=True)
    lp = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, chunk_size=2)
    want = raw.gather(-1, r.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(lp, want, atol=1e-4)


def test_sampling_is_seeded_and_never_emits_control_tokens(untrained):
    model, processor = untrained
    samples = _samples()[:2]
    kw = dict(num_generations=8, max_new_tokens=10, temperature=1.5)
    a = sample_groups(model, processor, samples, generator=torch.Generator().manual_seed(0), **kw)
    b = sample_groups(model, processor, samples, generator=torch.Generator().manual_seed(0), **kw)
    c = sample_groups(model, processor, samples, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    banned = torch.tensor(token_ids(processor, NEVER_SAMPLED))
    assert not torch.isin(a.completion_ids[a.completion_mask.bool()], banned).any()


def test_mask_stops_after_stop_token(untrained):
    model, processor = untrained
    stop = token_ids(processor, STOP_TOKENS)  # either ends a completion
    r = sample_groups(
        model,
        processor,
        _samples(),
        num_generations=4,
        max_new_tokens=24,
        temperature=2.0,
        generator=torch.Generator().manual_seed(3),
    )
    for ids, mask, trunc in zip(r.completion_ids, r.completion_mask, r.truncated):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert bool(trunc) == (int(ids[n - 1]) not in stop)


def test_top_k_one_equals_greedy(untrained):
    model, processor = untrained
    samples = _samples()[:2]
    g = sample_groups(model, processor, samples, num_generations=2, max_new_tokens=8, greedy=True)
    k = sample_groups(
        model,
        processor,
        samples,
        num_generations=2,
        max_new_tokens=8,
        top_k=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(g.completion_ids, k.completion_ids)


def test_sharded_sampling_draws_what_one_process_draws(untrained):
    """Two data-parallel shards, each with its half of the prompts, sample the same tokens as one process."""
    from othinklab.sampling import RowShard

    model, processor = untrained
    samples = _samples()[:4]
    G, T = 3, 10
    whole = sample_groups(model, processor, samples, G, T, generator=torch.Generator().manual_seed(5))
    # both shards share the seed; these shards cannot talk, so they decode to the length cap (the whole
    # batch may stop earlier: only its columns are compared)
    halves = [samples[:2], samples[2:]]
    parts = []
    for rank, part in enumerate(halves):
        shard = RowShard(start=rank * 2 * G, total=4 * G, all_done=lambda done: False)
        parts.append(
            sample_groups(model, processor, part, G, T, generator=torch.Generator().manual_seed(5), shard=shard)
        )
    got = torch.cat([p.completion_ids for p in parts])
    n = whole.completion_ids.shape[1]
    assert torch.equal(got[:, :n], whole.completion_ids)
    assert torch.equal(torch.cat([p.completion_mask for p in parts])[:, :n], whole.completion_mask)


@pytest.mark.parametrize("vocab", [640, 5000, 4099])  # one block; blocks of a divisor; padded blocks
def test_inverse_cdf_draws_each_token_in_proportion(vocab):
    """Evenly spaced uniforms land on each token in proportion to its probability (to one draw), never
    on a zero-probability token, also at u = 0 and u just below 1."""
    from othinklab.sampling import _inverse_cdf

    n = 2000
    g = torch.Generator().manual_seed(vocab)
    p = torch.rand(vocab, generator=g) ** 4
    p[torch.randperm(vocab, generator=g)[: vocab // 3]] = 0.0  # banned tokens
    p[0] = p[-1] = 0.0
    p = p / p.sum()
    u = ((torch.arange(n, dtype=torch.float64) + 0.5) / n).unsqueeze(1)
    drawn = _inverse_cdf(p.expand(n, vocab).contiguous(), u)
    counts = torch.bincount(drawn, minlength=vocab).double()
    assert (counts[p == 0] == 0).all()
    assert (counts - n * p.double()).abs().max() <= 1.0 + 1e-6
    ends = _inverse_cdf(p.expand(2, vocab).contiguous(), torch.tensor([[0.0], [1.0 - 2**-53]], dtype=torch.float64))
    nonzero = p.nonzero().squeeze(1)
    assert ends.tolist() == [int(nonzero[0]), int(nonzero[-1])]


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
