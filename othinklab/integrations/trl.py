"""GRPO-D for TRL users: a `TrainerCallback` that sets TRL `GRPOTrainer`'s KL weight beta every step.

Why: a TRL pipeline gets OThink-MR1's dynamic KL (or any othinklab schedule) by adding one callback:

    from othinklab.integrations.trl import KLScheduleCallback
    trainer = GRPOTrainer(model, reward_funcs, args=GRPOConfig(beta=0.07, ...), train_dataset=ds)
    KLScheduleCallback.attach(trainer, kl_cfg)   # kl_cfg: othinklab's `KLConfig`, or a Schedule
    trainer.train()

TRL (checked against 1.16) reads `self.beta` when it scores a generation batch (reference log-probs only if
`beta != 0.0`) and in `compute_loss` (`loss += beta * KL` only if `beta != 0.0`), so setting `trainer.beta`
before each optimizer step is all it takes. Two TRL rules shape the callback:
- Under full fine-tuning TRL builds no reference model when `GRPOConfig.beta == 0.0`, and none can be
  added later: a schedule that is ever > 0 needs a nonzero starting beta (any value; it is overridden from
  step 0), else `on_train_begin` raises. Under LoRA (peft) the reference is the adapter-disabled model.
- Where the schedule gives exactly 0 (GRPO-D with `beta_min = 0` at `s = w`), `zero_beta` (1e-12, i.e. no
  weight) is set instead, so TRL keeps computing reference log-probs (a batch scored at beta 0 and trained
  at a later nonzero beta, `steps_per_generation` > gradient accumulation, still has them) and the KL keeps
  being measured, as in othinklab's trainer. Pass `zero_beta=0.0` for TRL's own skip.

Logged each optimizer step (counted from 0, `state.global_step` before the step): `beta` in TRL's metrics
(so in `trainer.state.log_history`, the console and trackers) and `(step, beta)` in `callback.history`.
After each step the schedule observes `{"kl/value": mean KL TRL measured}` (the adaptive one reacts).

TRL puts k3 in the loss, optionally times pi/pi_old (`use_bias_correction_kl`, on by default since 1.16):
`kl.estimator=k3_is` sets it True, `k3` False. A `KLConfig` TRL cannot express raises a `ConfigError` at
construction naming the field: `k1`, `k2`, `k3_plus`, `kl.placement=reward` (no KL-in-reward for GRPO),
`kl.schedule=accuracy` (no accuracy reward by that name in TRL's metrics) and `kl.reset_reference_every`
(TRL's `sync_ref_model` mixes, a different rule).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from othinklab.errors import ConfigError
from othinklab.kl import Schedule, schedule_from_config

TRL_ESTIMATORS = {"k3": False, "k3_is": True}
"""othinklab estimators TRL's GRPOTrainer computes, with the `use_bias_correction_kl` each needs."""


def trl_problems(kl_cfg: Any) -> list[str]:
    """Why a `KLConfig`-like object cannot run under TRL's GRPOTrainer (empty when it can).

    >>> from othinklab.config import KLConfig
    >>> trl_problems(KLConfig()), len(trl_problems(KLConfig(estimator="k2", placement="reward")))
    ([], 2)
    """
    problems = []
    est = getattr(kl_cfg, "estimator", "k3")
    if est not in TRL_ESTIMATORS:
        problems.append(
            f"kl.estimator={est}: TRL's GRPOTrainer computes k3 in the loss, optionally importance-corrected "
            "(use_bias_correction_kl); use kl.estimator=k3 or k3_is, or othinklab's own trainer"
        )
    if getattr(kl_cfg, "placement", "loss") != "loss":
        problems.append("kl.placement=reward: TRL's GRPOTrainer has no KL-in-the-reward; use othinklab's trainer")
    if getattr(kl_cfg, "schedule", None) == "accuracy":
        problems.append("kl.schedule=accuracy: the callback sees no accuracy reward in TRL's metrics")
    if getattr(kl_cfg, "reset_reference_every", 0):
        problems.append("kl.reset_reference_every: use TRL's sync_ref_model (a different, mixing rule) instead")
    return problems


class KLScheduleCallback(TrainerCallback):
    """Drive a TRL `GRPOTrainer`'s `beta` from an othinklab KL schedule (see the module docstring).

    `schedule`: a `Schedule` (e.g. `make_schedule("grpo_d", total_steps=..., beta_min=..., beta_max=...)`),
    or an object with othinklab `KLConfig`'s fields (`schedule`, `beta_min`, ...), built at train start
    with the trainer's `max_steps` as `t`. `trainer`: the `GRPOTrainer` (callbacks are not given the
    trainer by transformers; `attach` binds and registers in one call).
    """

    def __init__(self, schedule: Schedule | Any, trainer: Any = None, zero_beta: float = 1e-12):
        if not zero_beta >= 0:
            raise ValueError(f"zero_beta must be >= 0, got {zero_beta!r}")
        problems = [] if isinstance(schedule, Schedule) else trl_problems(schedule)
        if problems:
            raise ConfigError("KLScheduleCallback cannot map this KL config onto TRL: " + "; ".join(problems))
        self._spec = schedule
        self.schedule: Schedule | None = schedule if isinstance(schedule, Schedule) else None
        self.trainer = trainer
        self.zero_beta = float(zero_beta)
        self.history: list[tuple[int, float]] = []
        self._kl_seen = 0

    @classmethod
    def attach(cls, trainer: Any, schedule: Schedule | Any, zero_beta: float = 1e-12) -> KLScheduleCallback:
        """Create the callback for `trainer`, register it (`trainer.add_callback`) and return it."""
        cb = cls(schedule, trainer, zero_beta)
        trainer.add_callback(cb)
        return cb

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is None or not hasattr(self.trainer, "beta"):
            raise ValueError(
                "KLScheduleCallback needs the GRPOTrainer: use KLScheduleCallback.attach(trainer, schedule) "
                "or KLScheduleCallback(schedule, trainer=trainer)"
            )
        if self.schedule is None:
            self.schedule = schedule_from_config(self._spec, int(state.max_steps))
            if hasattr(self._spec, "estimator") and hasattr(self.trainer, "args"):
                self.trainer.args.use_bias_correction_kl = TRL_ESTIMATORS[self._spec.estimator]
        if self.schedule.max_beta > 0 and self.trainer.beta == 0.0 and not self._reference_available():
            raise ValueError(
                "GRPOConfig.beta is 0.0, so TRL loaded no reference model and cannot compute the KL this "
                f"schedule ({self.schedule!r}) weighs. Create the GRPOTrainer with a nonzero GRPOConfig.beta "
                f"(e.g. beta={self.schedule(0)!r}; the callback sets it every step), or use LoRA (peft), "
                "whose reference is the adapter-disabled model."
            )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = int(state.global_step)
        beta = self.schedule(step)
        # 0 from the schedule: a negligible weight that keeps TRL's reference pass, where a reference exists
        applied = beta if beta > 0 else (self.zero_beta if self._reference_available() else 0.0)
        self.trainer.beta = float(applied)
        self.history.append((step, float(applied)))
        metrics = getattr(self.trainer, "_metrics", None)
        if isinstance(metrics, dict) and "train" in metrics:
            metrics["train"]["beta"].append(float(applied))  # averaged and logged by GRPOTrainer.log
            self._kl_seen = len(metrics["train"].get("kl", []))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.schedule is None:
            return
        metrics = getattr(self.trainer, "_metrics", {}).get("train", {})
        kls = list(metrics.get("kl", []))[self._kl_seen :]
        if kls:
            self.schedule.observe({"kl/value": sum(kls) / len(kls)})

    def _reference_available(self) -> bool:
        """True if TRL can compute reference log-probs: a reference model, or a peft model (adapter off)."""
        if getattr(self.trainer, "ref_model", None) is not None:
            return True
        model = getattr(self.trainer, "model", None)
        return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
