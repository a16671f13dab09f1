"""Shared-prefill group sampling: same tokens as `generate` under greedy, consistent log-probs, clean masks."""

from __future__ import annotations

import torch

from othinklab.rollout import NEVER_SAMPLED, completion_logprobs, encode_prompts, sample_groups, token_ids
from othinklab.tasks import make_task


def _samples():
    # mixed prompt lengths: left padding must not shift rotary positions
    return make_task("counting").samples(3) + make_task("geometry").samples(2)


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
    stop = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
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
        assert bool(trunc) == (ids[n - 1] != stop)


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
    from othinklab.rollout import RowShard

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
