"""Every KL option trains from the CLI with a finite KL logged, and the reference reset keeps its state.

Options: each `kl.estimator`, `kl.placement=reward`, the schedules `none` (beta = 0, KL still measured),
`accuracy` and `adaptive`, and `kl.reset_reference_every` under LoRA and full fine-tuning.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from othinklab.cli import main
from othinklab.metrics import read_metrics

TINY = [
    "model.name=tiny-init",
    "grpo.prompts_per_step=1",
    "grpo.num_generations=2",
    "grpo.max_completion_length=6",
    "task.num_eval=2",
    "train.total_steps=2",
    "train.threads=1",
    "train.log_rollouts=false",
    "kl.schedule=constant",
    "kl.beta=0.05",
]

OPTIONS = {
    "k1": ["kl.estimator=k1"],
    "k2": ["kl.estimator=k2"],
    "k3": ["kl.estimator=k3"],
    "k3_plus": ["kl.estimator=k3_plus"],
    "k3_is": ["kl.estimator=k3_is", "grpo.num_iterations=2"],  # off-policy on the second step: ratio != 1
    "reward": ["kl.placement=reward", "kl.estimator=k1"],
    "none": ["kl.schedule=none"],
    "accuracy": ["kl.schedule=accuracy", "kl.beta_min=0.0", "kl.beta_max=0.1"],
    "adaptive": ["kl.schedule=adaptive", "kl.target_kl=0.01", "kl.horizon=10"],
    "reset_lora": ["kl.reset_reference_every=1"],
    "reset_full": ["kl.reset_reference_every=1", "model.lora=false"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_each_kl_option_trains_two_steps_from_the_cli_with_a_finite_kl(tmp_path, name):
    assert main(["train", *TINY, *OPTIONS[name], f"train.output_dir={tmp_path}", f"train.run_name={name}"]) == 0
    m = read_metrics(tmp_path / name)
    assert list(m["step"]) == [0, 1]
    assert all(math.isfinite(v) for v in m["kl/value"]), m["kl/value"].tolist()
    assert all(math.isfinite(v) for v in m["loss/total"])
    if name == "none":
        assert (m["kl/beta"] == 0).all() and (m["loss/kl"] == 0).all()  # beta = 0, the KL still measured
    if name == "reward":
        assert (m["loss/kl"] == 0).all()  # the KL went into the rewards, not the loss
    if name == "accuracy":
        assert m["kl/beta"][0] == 0.0  # nothing observed yet: explore
        assert m["kl/beta"][1] == pytest.approx(0.1 * m["reward/accuracy"][0])
    if name.startswith("reset"):
        assert m["kl/value"][1] == pytest.approx(0.0, abs=1e-6)  # reference = the policy after step 0


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
