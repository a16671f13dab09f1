"""The float16 path: float32 adapters and AdamW state, loss scaling, float16 full fine-tuning refused."""

from __future__ import annotations

import math

import pytest
import torch

from othinklab import precision
from othinklab.config import load_config
from othinklab.errors import ConfigError


def trainable_dtypes(model: torch.nn.Module) -> dict[str, int]:
    """Count of trainable parameters per dtype name."""
    out: dict[str, int] = {}
    for p in model.parameters():
        if p.requires_grad:
            key = str(p.dtype).replace("torch.", "")
            out[key] = out.get(key, 0) + p.numel()
    return out


def _cfg(*overrides: str):
    return load_config(None, list(overrides))


def _fp16_run_cfg(tmp_path, *overrides: str):
    """A 2-step float16 LoRA run of the untrained tiny model with a reward that varies within a group
    (so the policy gradient is not zero), plus `overrides`."""
    from othinklab import tiny

    (tmp_path / "rw.py").write_text("def reward(completion, solution):\n    return float(len(completion) % 5)\n")
    return _cfg(
        f"model.name={tiny.ensure_untrained()}",
        "model.dtype=float16",
        "train.total_steps=2",
        f"train.output_dir={tmp_path}",
        "grpo.prompts_per_step=2",
        "grpo.num_generations=4",
        f"reward.accuracy_function={tmp_path / 'rw.py'}:reward",
        *overrides,
    )


def test_scaler_only_under_float16():
    assert precision.make_scaler(_cfg("model.dtype=float16"), "cpu").is_enabled()
    assert not precision.make_scaler(_cfg("model.dtype=float16", "train.loss_scaling=false"), "cpu").is_enabled()
    for dtype in ("float32", "bfloat16"):
        assert not precision.make_scaler(_cfg(f"model.dtype={dtype}"), "cpu").is_enabled()


def test_float16_full_fine_tuning_is_refused():
    with pytest.raises(ConfigError, match="model.dtype='float16'.*lora: true"):
        _cfg("model.dtype=float16", "model.lora=false")


def test_loss_scaling_keeps_gradients_that_float16_would_flush_to_zero():
    """A float32 weight behind float16 activations: a 1e-8 gradient underflows in float16 unless scaled."""
    x = torch.full((4,), 0.5, dtype=torch.float16)

    def grad_after_step(scaling: bool) -> torch.Tensor:
        w = torch.nn.Parameter(torch.ones(4))
        opt = torch.optim.SGD([w], lr=1.0)
        scaler = precision.make_scaler(_cfg("model.dtype=float16", f"train.loss_scaling={scaling}"), "cpu")
        loss = (w.half() * x).sum().float() * 1e-8  # d loss / d (w*x) = 1e-8: below float16's smallest subnormal
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        g = w.grad.clone()
        precision.apply_update(scaler, opt, finite=bool(torch.isfinite(g).all()))
        return g

    assert torch.count_nonzero(grad_after_step(False)) == 0
    g = grad_after_step(True)
    assert torch.allclose(g, torch.full((4,), 0.5e-8), rtol=1e-2)


def test_overflow_with_a_high_scale_is_not_counted_as_nonfinite():
    on = precision.make_scaler(_cfg("model.dtype=float16"), "cpu")
    off = precision.no_scaler()
    assert precision.counts_as_nonfinite(off, 1.0, math.inf)
    assert not precision.counts_as_nonfinite(on, 1.0, math.inf)  # scale 65536: the scaler halves it, retry
    assert precision.counts_as_nonfinite(on, math.nan, 1.0)  # a NaN loss always counts
    assert not precision.counts_as_nonfinite(on, 1.0, 2.0)


def test_float32_trainable_leaves_frozen_weights_alone():
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)).half()
    m[0].requires_grad_(False)
    assert [id(p) for p in precision.float32_trainable(m)] == [id(m[1].weight), id(m[1].bias)]
    assert m[0].weight.dtype == torch.float16 and m[1].weight.dtype == torch.float32
    assert trainable_dtypes(m) == {"float32": 12}


@pytest.mark.slow
def test_float16_lora_training_step_on_cpu(tmp_path):
    """The tiny model loaded in float16: adapters float32, loss scaled, two steps with finite loss that move
    the adapters (a reward that varies within a group, so the policy gradient is not zero)."""
    from othinklab.models import load_model
    from othinklab.trainer import build_parts, train

    cfg = _fp16_run_cfg(tmp_path, "train.save_every=0", "grpo.max_completion_length=12", "train.learning_rate=1e-3")
    model, processor = load_model(cfg.model)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.float16}
    assert set(trainable_dtypes(model)) == {"float32"}
    parts = build_parts(cfg, model, processor)
    assert parts.scaler.is_enabled() and parts.scaler.get_scale() == 2.0**16
    assert all(p.dtype == torch.float32 for p in parts.params)
    before = [p.detach().clone() for p in parts.params]
    rows: list[dict] = []
    train(cfg, model_and_processor=(model, processor), progress=False, callbacks=[rows.append])
    assert len(rows) == 2
    assert all(math.isfinite(r["loss/total"]) and math.isfinite(r["grad/norm"]) for r in rows)
    assert sum(r["skipped/nonfinite"] for r in rows) == 0
    after = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_float16_checkpoint_keeps_the_loss_scale_and_resume_restores_it(tmp_path):
    """A resume must continue at the scale the run had reached, not restart at 2^16."""
    from othinklab import checkpoint
    from othinklab.models import load_model
    from othinklab.trainer import build_parts, train

    cfg = _fp16_run_cfg(tmp_path, "train.save_every=1", "train.run_name=fp16", "grpo.max_completion_length=8")
    model, processor = load_model(cfg.model)
    train(cfg, model_and_processor=(model, processor), progress=False)
    latest = checkpoint.latest_checkpoint(tmp_path / "fp16" / "checkpoints")
    saved = checkpoint.load_state(latest)[1]["scaler"]
    assert saved["scale"] > 0 and "_growth_tracker" in saved
    # pretend the run had backed off to a low scale, then resume into fresh parts
    saved["scale"] = 256.0
    training = checkpoint.load_state(latest)[1]
    training["scaler"] = saved
    torch.save(training, latest / checkpoint.TRAINING_FILE)
    model2, processor2 = load_model(cfg.model)
    parts = build_parts(cfg, model2, processor2)
    assert parts.scaler.get_scale() == 2.0**16
    checkpoint.resume_training(tmp_path / "fp16", parts, True)
    assert parts.scaler.get_scale() == 256.0
