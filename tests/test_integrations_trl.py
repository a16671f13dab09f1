"""`othinklab.integrations.trl`: an othinklab KL schedule drives TRL GRPOTrainer's beta, on the tiny model.

Skipped where TRL is not installed (it is an optional extra: `pip install -e ".[dev,bench]"`).
"""

from __future__ import annotations

import zlib

import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is an optional extra (pip install -e '.[dev,bench]')")

from othinklab.config import KLConfig  # noqa: E402
from othinklab.integrations.trl import KLScheduleCallback  # noqa: E402
from othinklab.kl import make_schedule  # noqa: E402
from othinklab.models import load_model  # noqa: E402
from othinklab.tasks import make_task  # noqa: E402

P, G, T = 2, 4, 8


def _dataset():
    from datasets import Dataset

    samples = make_task("counting").samples(P, split="train", seed=3)

    def user(s):
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_text}]}]

    return Dataset.from_list(
        [{"prompt": user(s), "image": s.image.convert("RGB"), "answer": s.answer} for s in samples]
    )


def _reward(completions, **kwargs):
    """Varied rewards (so advantages are nonzero and the policy moves): a hash of the completion's text."""
    return [float(zlib.crc32(c[0]["content"].encode()) % 7) for c in completions]


def _trainer(tmp_path, beta: float, steps: int, lr: float = 1e-3, lora: bool = False, model: str = "tiny"):
    """TRL's GRPOTrainer on the tiny base (`model="tiny-init"`: the untrained weights, for plumbing checks)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, processor = load_model(model, lora=lora)
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=P * G,  # counts completions: P prompts x G
        num_generations=G,
        max_completion_length=T,
        max_steps=steps,
        beta=beta,
        loss_type="grpo",
        # the paper's objective: TRL >= 1.16 defaults to use_bias_correction_kl=True, a ratio-weighted KL
        # gradient (DeepSeek-V3.2) that OThink-MR1's Eq. 4 does not have
        **(
            {"use_bias_correction_kl": False} if "use_bias_correction_kl" in trl.GRPOConfig.__dataclass_fields__ else {}
        ),
        learning_rate=lr,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        temperature=1.5,  # varied completions within a group
        seed=0,
    )
    return trl.GRPOTrainer(
        model=model, reward_funcs=_reward, args=args, train_dataset=_dataset(), processing_class=processor
    )


@pytest.mark.slow
def test_beta_follows_the_schedule_each_step(tmp_path, base_dir):
    trainer = _trainer(tmp_path, beta=0.5, steps=4)
    schedule = make_schedule("grpo_d", total_steps=4, beta_min=0.04, beta_max=0.1)
    cb = KLScheduleCallback.attach(trainer, schedule)
    seen = []  # the beta TRL's compute_loss actually uses, per call
    compute_loss = trainer.compute_loss

    def recording(*args, **kwargs):
        seen.append(trainer.beta)
        return compute_loss(*args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    want = [schedule(s) for s in range(4)]
    assert want[0] == pytest.approx(0.07) and len(set(want)) == 4  # GRPO-D: 0.07 falling, then rising
    assert [b for _, b in cb.history] == pytest.approx(want)
    assert [s for s, _ in cb.history] == [0, 1, 2, 3]
    assert seen == pytest.approx(want)  # one micro-batch per step
    logged = [row["beta"] for row in trainer.state.log_history if "beta" in row]
    assert logged == pytest.approx(want)
    kls = [row["kl"] for row in trainer.state.log_history if "kl" in row]
    assert len(kls) == 4 and kls[-1] > 0  # the reference pass ran and the policy moved away from it


@pytest.mark.slow
def test_beta_changes_the_loss_trl_computes(tmp_path, base_dir):
    """Same batch, three betas: TRL's loss moves by beta x the measured KL (linear, KL > 0)."""
    trainer = _trainer(tmp_path, beta=0.04, steps=2, lr=3e-2)
    KLScheduleCallback.attach(trainer, make_schedule("constant", beta=0.04))
    trainer.train()  # two updates move the policy away from the reference, so the KL is nonzero
    rows = [trainer.train_dataset[i] for i in range(P) for _ in range(G)]
    trainer.model.eval()
    inputs = trainer._generate_and_score_completions(rows)
    assert inputs["ref_per_token_logps"] is not None
    losses = {}
    for beta in (0.01, 0.5, 1.0):
        trainer.beta = beta
        with torch.no_grad():
            losses[beta] = float(trainer.compute_loss(trainer.model, inputs))
    kl_slope = (losses[1.0] - losses[0.01]) / 0.99
    assert kl_slope > 1e-6, losses
    assert losses[0.5] == pytest.approx(losses[0.01] + 0.49 * kl_slope, rel=1e-4, abs=1e-7)


@pytest.mark.slow
def test_kl_config_is_built_with_max_steps_and_lora_needs_no_initial_beta(tmp_path, base_dir):
    trainer = _trainer(tmp_path, beta=0.0, steps=2, lora=True)
    cb = KLScheduleCallback.attach(trainer, KLConfig(schedule="grpo_d", beta_min=0.0, beta_max=0.02))
    trainer.train()
    assert cb.schedule.params["total_steps"] == 2
    # t = 2: beta 0.01 at step 0, then 0.02 * (1 - 0.6) / 1.4 at step 1
    assert [b for _, b in cb.history] == pytest.approx([0.01, 0.02 * 0.4 / 1.4])


def test_zero_initial_beta_without_a_reference_is_refused(tmp_path):
    trainer = _trainer(tmp_path, beta=0.0, steps=1, model="tiny-init")
    KLScheduleCallback.attach(trainer, make_schedule("constant", beta=0.04))
    with pytest.raises(ValueError, match="nonzero GRPOConfig.beta"):
        trainer.train()


def test_a_zero_from_the_schedule_keeps_the_reference_pass(tmp_path):
    trainer = _trainer(tmp_path, beta=0.1, steps=1, model="tiny-init")
    cb = KLScheduleCallback.attach(trainer, make_schedule("constant", beta=0.0))
    trainer.train()
    assert cb.history == [(0, 1e-12)]
    assert [row["kl"] for row in trainer.state.log_history if "kl" in row] == [0.0]  # measured (policy == ref)


def test_needs_the_trainer():
    with pytest.raises(ValueError, match="needs the GRPOTrainer"):
        KLScheduleCallback(make_schedule("constant", beta=0.1)).on_train_begin(None, None, None)


@pytest.mark.parametrize(
    "field, value", [("estimator", "k2"), ("estimator", "k3_plus"), ("placement", "reward"), ("schedule", "accuracy")]
)
def test_what_trl_cannot_express_is_refused_naming_the_field(field, value):
    from othinklab.errors import ConfigError

    with pytest.raises(ConfigError, match=f"kl.{field}={value}"):
        KLScheduleCallback(KLConfig(**{field: value}))


@pytest.mark.parametrize("estimator, corrected", [("k3", False), ("k3_is", True)])
def test_the_estimator_maps_onto_trls_bias_corrected_kl(estimator, corrected):
    from types import SimpleNamespace

    fake = SimpleNamespace(beta=0.1, ref_model=object(), args=SimpleNamespace(use_bias_correction_kl=not corrected))
    cb = KLScheduleCallback(KLConfig(schedule="constant", beta=0.05, estimator=estimator), trainer=fake)
    cb.on_train_begin(None, SimpleNamespace(max_steps=3), None)
    assert fake.args.use_bias_correction_kl is corrected
    cb.on_step_begin(None, SimpleNamespace(global_step=0), None)
    assert fake.beta == 0.05
