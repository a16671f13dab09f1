"""`othinklab.logprobs`: the chunked head gives the log-probs, gradients and entropy of plain
log_softmax + gather; the shared-prompt pass equals full sequences."""

from __future__ import annotations

import torch
from prompt_samples import mixed_samples as _samples

from othinklab.sampling import (
    sample_groups,
)


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


def test_entropy_comes_from_the_same_chunked_pass():
    from othinklab.logprobs import token_logprobs_from_hidden

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(5, 3, 8, requires_grad=True)
    labels = torch.randint(0, 11, (5, 3))
    plain = token_logprobs_from_hidden(head, hidden, labels, 2)
    logp, entropy = token_logprobs_from_hidden(head, hidden, labels, 2, with_entropy=True)
    assert torch.equal(plain, logp) and not entropy.requires_grad
    logits = head(hidden).detach()
    want = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.allclose(entropy, want, atol=1e-6)
    (g1,) = torch.autograd.grad(plain.sum(), hidden)
    (g2,) = torch.autograd.grad(logp.sum(), hidden)
    assert torch.equal(g1, g2)  # asking for the entropy leaves the gradient untouched
    with torch.no_grad():
        _, ent_nograd = token_logprobs_from_hidden(head, hidden, labels, 3, with_entropy=True)
    assert torch.allclose(ent_nograd, want, atol=1e-6)
