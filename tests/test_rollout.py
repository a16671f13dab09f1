"""Shared-prefill group sampling: same tokens as `generate` under greedy, consistent log-probs, clean masks."""

from __future__ import annotations

import pytest
import torch

from othinklab.logprobs import completion_logprobs
from othinklab.sampling import NEVER_SAMPLED, STOP_TOKENS, encode_prompts, sample_groups, token_ids
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


def test_chunked_logprobs_gradients_match_autograd():
    """The recomputing head function gives the log-probs and gradients of plain log_softmax + gather."""
    from othinklab.logprobs import token_logprobs_from_hidden

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).double()
    hidden = torch.randn(5, 7, 16, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (5, 7), generator=g)
    weights = torch.randn(5, 7, generator=g, dtype=torch.float64)
    got = token_logprobs_from_hidden(head, hidden, labels, chunk_size=2)
    (got * weights).sum().backward()
    grads = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    for t in (hidden, head.weight, head.bias):
        t.grad = None
    want = head(hidden).log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (want * weights).sum().backward()
    assert torch.allclose(got, want)
    for a, b in zip(grads, [hidden.grad, head.weight.grad, head.bias.grad]):
        assert torch.allclose(a, b)


def test_shared_prompt_logprobs_and_gradients_equal_full_sequences(untrained):
    """The prompt run once per group (KV cache repeated) gives the full-sequence log-probs and gradients."""
    from othinklab import logprobs

    model, processor = untrained
    samples = _samples()[:3]
    r = sample_groups(model, processor, samples, 4, 10, generator=torch.Generator().manual_seed(2))
    backbone, head = logprobs.text_model_parts(model)
    model.train()
    try:
        results = []
        for shared in (True, False):
            model.zero_grad(set_to_none=True)
            if shared:
                hidden = logprobs._completion_hidden_shared(backbone, r.prompt, r.completion_ids, 4)
            else:
                hidden = logprobs._completion_hidden_full(backbone, r.prompt, r.completion_ids, r.completion_mask, 4)
            lp = logprobs.token_logprobs_from_hidden(head, hidden, r.completion_ids, 3)
            (lp * r.completion_mask).sum().backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            results.append((lp.detach() * r.completion_mask, grads))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, atol=1e-5)
    assert ga.keys() == gb.keys() and any("visual" in n for n in ga)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-4, rtol=1e-3), n
