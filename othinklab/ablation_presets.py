"""The ablation study's presets: KL-schedule and loss variants of GRPO-D on counting, and their cost.

Why: OThink-MR1 fixes w/t = 0.3 and two beta ranges and never ablates them, and users now compare GRPO
variants the paper predates (Dr. GRPO, DAPO's clip-higher and token mean, no std scaling, masking
truncated completions). Each preset runs them on the grid with the GRPO-D default's seeds and eval prompts,
so every claim is a *paired* difference with an interval.

Simplified versus a full study: one train task (counting, the paper's few-shot-sensitive one) and short
runs, so every preset together fits in under an hour on 2 CPU cores (`ablation_seconds`). `find_preset`
looks these up; importing this module registers nothing.
"""

from __future__ import annotations

from othinklab.grid import PAPER_METHODS, Method, Preset, estimate_seconds
from othinklab.grid_report import EVAL_OF, Claim

BASE, GRPO, GRPO_D = (next(m for m in PAPER_METHODS if m.name == n) for n in ("base", "grpo", "grpo_d"))
"""The paper's base, GRPO (constant beta 0.04 on counting) and GRPO-D (Eq. 3, 0.04..0.1, w/t 0.3): the
default every variant is paired against."""
COUNTING_D = ("kl.schedule=grpo_d", "kl.beta_min=0.04", "kl.beta_max=0.1", "kl.explore_frac=0.3")
"""GRPO-D's counting settings written out, so a variant states every KL setting it runs with."""


def _variant(name: str, *overrides: str) -> Method:
    """A GRPO method on the counting task: GRPO-D's settings, then `overrides` (later items win)."""
    return Method(name, "grpo", overrides=(*COUNTING_D, *overrides))


EXPLORE = tuple(_variant(f"grpo_d_w{w}", f"kl.explore_frac={w}") for w in (0.1, 0.5, 0.7))
"""w/t of Eq. 3 beside the paper's 0.3 (the default `grpo_d`)."""
BETA_RANGES = (
    _variant("beta_0.0-0.02", "kl.beta_min=0.0", "kl.beta_max=0.02"),  # the paper's geometry range
    _variant("beta_half", "kl.beta_min=0.02", "kl.beta_max=0.05"),
    _variant("beta_double", "kl.beta_min=0.08", "kl.beta_max=0.2"),
)
"""beta_min..beta_max of Eq. 3 beside the paper's counting range 0.04..0.1 (the default)."""
SCHEDULES = (
    _variant("linear_up", "kl.schedule=linear", "kl.beta_start=0.04", "kl.beta_end=0.1"),
    _variant("linear_down", "kl.schedule=linear", "kl.beta_start=0.1", "kl.beta_end=0.04"),
    _variant("cosine_down", "kl.schedule=cosine", "kl.beta_start=0.1", "kl.beta_end=0.04"),
    _variant("adaptive", "kl.schedule=adaptive", "kl.beta=0.04", "kl.target_kl=0.02", "kl.horizon=10"),
)
"""Schedule shapes over the same beta range as GRPO-D; constant beta is the paper's GRPO (`grpo`).
The adaptive controller gets a 10-step horizon: with the default 100 it could barely move in a short run."""
LOSSES = (
    _variant("scale_batch", "grpo.scale_rewards=batch"),
    _variant("scale_none", "grpo.scale_rewards=none"),
    _variant("dr_grpo", "grpo.scale_rewards=none", "grpo.aggregation=dr_grpo"),
    _variant("token_mean", "grpo.aggregation=token"),
    _variant("mask_truncated", "grpo.mask_truncated_completions=true"),
    _variant("two_updates", "grpo.num_iterations=2"),
    _variant("clip_higher", "grpo.num_iterations=2", "grpo.epsilon_high=0.28"),
)
"""Loss variants on GRPO-D's schedule. Clipping only acts when a batch is reused (with one update per batch
the ratio is 1), so clip-higher runs two updates per batch and is also paired against `two_updates` (same
reuse, symmetric clip)."""


def _claims(methods: tuple[Method, ...], against: str = "grpo_d") -> tuple[Claim, ...]:
    """Each variant vs `against`, on the trained task and on the other one (paired: same seeds, prompts)."""
    out = []
    for m in methods:
        for ev in EVAL_OF.values():
            where = "same task" if ev == EVAL_OF["counting"] else f"cross-task ({ev.split(':')[0]})"
            out.append(Claim(m.name, against, "counting", ev, f"{m.name} vs {against}, {where}"))
    return tuple(out)


KL_LAB = (
    _variant("beta0", "kl.schedule=none"),
    _variant("const_0.04", "kl.schedule=constant", "kl.beta=0.04"),
    _variant("accuracy_kl", "kl.schedule=accuracy"),
    _variant("ref_reset", "kl.reset_reference_every=10"),
    _variant("k1_reward", "kl.estimator=k1", "kl.placement=reward"),
    _variant("k2_loss", "kl.estimator=k2"),
    _variant("k3_plus", "kl.estimator=k3_plus"),
    _variant("k3_is", "kl.estimator=k3_is"),
)
"""The KL lab's arms beside GRPO-D (k3 in the loss, Eq. 3 on 0.04..0.1): beta = 0 (TRL's and DAPO's default;
the KL still logged), the paper's constant 0.04 (GRPO), beta from the batch's accuracy (FG-ExPO-like) over the
same range, the reference reset to the policy every 10 steps (ProRL), and the other estimators and placement
(docs/paper.md: which KL each one's gradient follows)."""


SIZES = dict(
    seeds=(0, 1, 2),
    steps=30,
    prompts_per_step=6,
    num_generations=8,
    max_completion_length=48,
    num_eval=100,
    eval_samples=1,
    train_tasks=("counting",),
)
"""Shared by the full presets: 3 seeds, 30 steps of 6 prompts x G=8, 100 eval prompts per task x 1 sample,
counting only (the cross-task column is geometry). Chosen so all four presets fit in under an hour on 2 cores."""
KL_PROMPTS = 30
"""Eval prompts per eval task on which the mechanism view measures each run's KL to the base."""
KL_SAMPLES = 2
"""Sampled completions per prompt for that measurement."""

ABLATIONS: dict[str, Preset] = {
    "ablate-explore": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *EXPLORE),
        claims=_claims(EXPLORE),
        description="GRPO-D's w/t in {0.1, 0.3, 0.5, 0.7} on counting, paired against the paper's 0.3",
    ),
    "ablate-beta": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *BETA_RANGES),
        claims=_claims(BETA_RANGES),
        description="GRPO-D's beta range: the paper's two (0.04-0.1, 0.0-0.02), half and double of 0.04-0.1",
    ),
    "ablate-schedule": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, GRPO, *SCHEDULES),
        claims=_claims((GRPO, *SCHEDULES)),
        description="schedule shapes (constant, linear up/down, cosine, adaptive) against GRPO-D",
    ),
    "ablate-loss": Preset(
        **SIZES,
        methods=(BASE, GRPO_D, *LOSSES),
        claims=_claims(LOSSES) + _claims(LOSSES[-1:], against="two_updates"),
        description="Dr. GRPO, DAPO token mean and clip-higher, no/batch std scaling, truncation masking",
    ),
    "kl-lab": Preset(
        **{**SIZES, "seeds": (0, 1, 2, 3, 4), "num_eval": 64, "eval_samples": 8},
        methods=(BASE, GRPO_D, *KL_LAB),
        claims=_claims(KL_LAB),
        description="the KL lab: GRPO-D vs beta = 0, constant, accuracy-driven beta, reference resets, k1-in-reward, "
        "k2, k3+ and importance-corrected k3; 5 seeds, pass@8 from 8 samples per prompt",
    ),
    "ablate-smoke": Preset(
        seeds=(0,),
        steps=2,
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=24,
        num_eval=8,
        eval_samples=1,
        train_tasks=("counting",),
        methods=(BASE, GRPO_D, LOSSES[2], LOSSES[-1]),
        claims=_claims((LOSSES[2], LOSSES[-1])),
        description="plumbing check for the tests (2 steps): its numbers are noise",
    ),
}
"""The ablation presets; `find_preset` knows them and the grid's (`othinklab grid --preset ablate-explore`)."""
FULL = ("ablate-explore", "ablate-beta", "ablate-schedule", "ablate-loss")
"""The study: every full preset; `othinklab ablate` runs them in this order."""

MEASURE_SECONDS_PER_SEQUENCE = 1.2 / 64
"""Cost of measuring KL on one sequence: sampling plus two no-grad log-prob passes, about a training one."""
LOAD_SECONDS = 3.0
"""Loading a run's checkpoint onto the base for the measurement."""


def ablation_seconds(preset: Preset) -> float:
    """Expected wall time of a fresh preset alone on 2 CPU cores: the grid's estimate plus the KL
    measurement of every trained run (an estimate from per-sequence costs, not a timing).

    >>> {k: round(ablation_seconds(ABLATIONS[k]) / 60, 1) for k in FULL}
    {'ablate-explore': 8.5, 'ablate-beta': 8.5, 'ablate-schedule': 12.7, 'ablate-loss': 16.9}
    >>> round(sum(ablation_seconds(ABLATIONS[k]) for k in FULL) / 60)
    46
    """
    runs = sum(m.trainer != "none" for m in preset.methods) * len(preset.seeds) * len(preset.train_tasks)
    kl_seqs = runs * len(EVAL_OF) * min(KL_PROMPTS, preset.num_eval) * KL_SAMPLES
    return estimate_seconds(preset) + kl_seqs * MEASURE_SECONDS_PER_SEQUENCE + runs * LOAD_SECONDS


def find_preset(name: str) -> Preset:
    """The grid's or an ablation preset called `name` (this module registers nothing into `grid.PRESETS`)."""
    from othinklab.errors import UserError
    from othinklab.grid import PRESETS

    presets = {**PRESETS, **ABLATIONS}
    if name not in presets:
        raise UserError(f"grid preset {name!r} is unknown; choose one of {', '.join(presets)}")
    return presets[name]
