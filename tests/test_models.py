"""Model loading: LoRA reference = adapter disabled, 4-bit NF4 on CPU (vision towers of Qwen2.5-VL and
Qwen3-VL left alone), Qwen2.5-VL, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from archs import ARCHS, build

from othinklab import tiny
from othinklab.errors import UserError
from othinklab.logprobs import completion_logprobs
from othinklab.models import add_lora, is_lora, load_model, make_reference
from othinklab.sampling import (
    sample_groups,
)
from othinklab.tasks import make_task


def test_lora_reference_is_the_adapter_disabled_model(untrained):
    base, processor = untrained
    base = copy.deepcopy(base)
    samples = make_task("counting").samples(2)
    r = sample_groups(base, processor, samples, num_generations=2, max_new_tokens=6, greedy=True)
    want = completion_logprobs(base, r.prompt, r.completion_ids, r.completion_mask, 2)
    model = add_lora(base, r=4, alpha=8)
    assert is_lora(model) and make_reference(model) is None
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < total / 5
    assert not any("visual" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)  # make the adapter matter
    ref = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2, disable_adapter=True)
    pol = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2)
    assert torch.allclose(ref, want, atol=1e-5)
    assert not torch.allclose(pol, want, atol=1e-3)


def test_full_finetuning_reference_is_a_frozen_copy(untrained):
    model, _ = untrained
    ref = make_reference(model)
    assert ref is not model and not any(p.requires_grad for p in ref.parameters())


def test_4bit_nf4_lora_loads_and_backprops_on_cpu(tmp_path):
    from othinklab.tiny import ensure_untrained

    model, processor = load_model(str(ensure_untrained()), load_in_4bit=True, lora=True, lora_r=4)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in kinds
    samples = make_task("geometry").samples(2)
    r = sample_groups(model, processor, samples, num_generations=2, max_new_tokens=5)
    lp = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2)
    (lp * r.completion_mask).sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_qwen2_5_vl_tiny_runs_the_same_path(untrained):
    from transformers import AutoModelForImageTextToText

    from othinklab.tiny import tiny_config

    _, processor = untrained
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(tiny_config(processor.tokenizer, arch="qwen2_5_vl"))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    model = add_lora(model, r=4, alpha=8)
    samples = make_task("counting").samples(2)
    r = sample_groups(model, processor, samples, num_generations=2, max_new_tokens=6, greedy=True)
    lp = completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2)
    assert lp.shape == r.completion_ids.shape and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", ["/no/such/dir", "not-a-model-name"])
def test_bad_model_path_is_a_clear_error(name):
    with pytest.raises(UserError, match="model.name"):
        load_model(name)


def test_gradient_checkpointing_gives_the_same_gradients():
    from othinklab.tiny import ensure_untrained

    path = str(ensure_untrained())
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model, processor = load_model(path, lora=True, lora_r=4, gradient_checkpointing=ckpt)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
        model.train()
        samples = make_task("counting").samples(2)
        r = sample_groups(model, processor, samples, num_generations=2, max_new_tokens=5, greedy=True)
        completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for n, p in model.named_parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_4bit_keeps_the_vision_tower_and_dtype_and_checkpoints_without_reentrancy(recwarn):
    """Under 4-bit: the vision tower is not quantised (transformers 5 matches skip names from the start), no
    weight is upcast to float32 (peft's kbit preparation is not used), checkpointing is non-reentrant, and the
    frozen vision tower's output needs no gradient in the policy pass, so it runs no backward."""
    from othinklab.tiny import ensure_untrained

    model, processor = load_model(
        str(ensure_untrained()), dtype="bfloat16", load_in_4bit=True, lora=True, lora_r=4, gradient_checkpointing=True
    )
    quantised = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    assert quantised and not any("visual" in n for n in quantised)
    frozen = {p.dtype for n, p in model.named_parameters() if not p.requires_grad and p.dtype.is_floating_point}
    assert frozen == {torch.bfloat16}, frozen
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    visual = next(m for n, m in model.named_modules() if n.endswith("model.visual"))
    seen = []
    visual.register_forward_hook(lambda m, i, o: seen.append(getattr(o, "pooler_output", o).requires_grad))
    samples = make_task("counting").samples(1)
    r = sample_groups(model, processor, samples, num_generations=2, max_new_tokens=4)
    model.train()
    completion_logprobs(model, r.prompt, r.completion_ids, r.completion_mask, 2).sum().backward()
    assert seen and not any(seen)
    assert sum(p.grad.abs().sum().item() for n, p in model.named_parameters() if "lora_B" in n) > 0
    assert not [w for w in recwarn if "use_reentrant" in str(w.message)]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_4bit_lora_leaves_the_vision_tower_alone(arch, tmp_path):
    """Qwen2.5-VL's vision MLP reuses the text names (gate/up/down_proj), Qwen3-VL adds deepstack mergers: in
    4-bit neither tower is quantised nor adapted, and every text projection is."""
    from othinklab.models import LORA_TARGETS, load_model

    model, processor = build(arch)
    tiny.save_pretrained(model, processor, tmp_path / arch)
    model, _ = load_model(str(tmp_path / arch), dtype="bfloat16", load_in_4bit=True, lora=True, lora_r=4)
    quantised = [n for n, m in model.named_modules() if type(m).__module__.startswith("bitsandbytes")]
    layers = model.config.get_text_config().num_hidden_layers
    assert len(quantised) == layers * len(LORA_TARGETS) and not any("visual" in n for n in quantised)
    adapted = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapted and not any("visual" in n for n in adapted)


def test_a_first_use_build_leaves_the_seeded_rngs_as_a_cached_load_does(tmp_path, monkeypatch):
    """A fresh machine builds `tiny-init` inside the first run; that build must not move the global RNGs, or
    the first seeded run (LoRA init, sampling) differs from every later one with the same seed."""
    import random

    import numpy as np

    from othinklab.rng import seed_everything

    monkeypatch.setenv("OTHINKLAB_HOME", str(tmp_path))

    def draws() -> tuple:
        seed_everything(7)
        load_model("tiny-init", lora=True, lora_r=4)
        return torch.rand(4).tolist(), float(np.random.rand()), random.random()

    first = draws()  # builds the cache
    assert (tmp_path / tiny.untrained_dir().name / "othinklab.json").exists()
    assert draws() == first  # loads it
