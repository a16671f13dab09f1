"""`othinklab.reference`: the reference reset (`kl.reset_reference_every`) swaps a stored adapter copy in
and round-trips through its state dict."""

from __future__ import annotations

import copy

import torch


def test_reference_reset_swaps_the_adapter_copy_in_and_round_trips(untrained):
    """LoRA: a reset stores the adapter; the reference pass uses it without touching the policy's weights;
    `state_dict` / `load_state_dict` restore it exactly (what a resumed run needs)."""
    from othinklab.models import add_lora
    from othinklab.reference import Reference
    from othinklab.sampling import sample_groups
    from othinklab.tasks import make_task

    base, processor = untrained
    model = add_lora(copy.deepcopy(base))
    r = sample_groups(model, processor, make_task("counting").samples(1, seed=2), 2, 5, 1.0)
    args = (r.prompt, r.completion_ids, r.completion_mask, 2, 8)
    ref = Reference(model, None, use_lora=True, enabled=True, reset_every=2)
    initial = ref.logprobs(*args)
    assert not ref.after_step(1) and ref.state_dict() == {}  # not due
    trainable = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in trainable:
            p.add_(0.05)  # "training" moves the adapter
    policy_now = ref.logprobs(*args)
    torch.testing.assert_close(policy_now, initial)  # still the adapter-disabled base
    assert ref.after_step(2)
    after_reset = ref.logprobs(*args)
    assert not torch.allclose(after_reset, initial)
    before = [p.detach().clone() for p in trainable]
    with torch.no_grad():
        for p in trainable:
            p.add_(0.05)
    torch.testing.assert_close(ref.logprobs(*args), after_reset)  # the stored copy, not the moved adapter
    moved = [p.detach().clone() for p in trainable]
    assert all(not torch.equal(a, b) for a, b in zip(before, moved))
    assert all(torch.equal(p, m) for p, m in zip(trainable, moved))  # swapped back exactly
    fresh = Reference(model, None, use_lora=True, enabled=True, reset_every=2)
    fresh.load_state_dict(ref.state_dict())
    torch.testing.assert_close(fresh.logprobs(*args), after_reset)
