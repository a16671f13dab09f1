"""The GRPO(-D) training loop, in named phases: sample prompts -> rollout -> rewards -> advantages -> beta(s)
-> loss -> step.

Why: the whole algorithm should read top to bottom on one screen (nanoGPT style), so one step is four
phases, split as TRL splits `_generate_and_score_completions` from `compute_loss`: `generate_and_score`
(completions, rewards, advantages, reference log-probs -> a `GenerationBatch`), `compute_loss` (Eq. 4 with
beta(s), backward), `optimizer_step` and `log_step`; the math lives in `grpo.py` and `kl.py` (docs/files.md
maps the rest). Every optimizer step appends a row to `metrics.jsonl` and every completion to
`rollouts.jsonl`; checkpoints are atomic.

Simplified versus R1-V / TRL: data parallelism only (DDP; no model sharding); `num_iterations` reuses a
generation batch for that many optimizer steps (TRL's semantics), with old log-probs computed once per
batch; with LoRA the reference is the adapter-disabled model, so the reference log-probs cost one extra
forward and no memory; the KL is *measured* every step whenever a reference exists, even at beta = 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from othinklab import checkpoint as ckpt_io
from othinklab import distributed, precision, runlock
from othinklab.config import Config, to_dict
from othinklab.errors import TrainingError
from othinklab.evaluate import periodic_eval
from othinklab.failures import oom_message
from othinklab.grpo import AllTruncatedGuard, group_advantages, grpo_loss, loss_mask, masked_mean
from othinklab.kl import Schedule, needs_reference, schedule_from_config, sequence_kl_penalty
from othinklab.logprobs import completion_logprobs
from othinklab.models import is_lora, load_model, make_reference
from othinklab.reference import Reference
from othinklab.rewards import RewardBreakdown, load_reward_function, safe_score
from othinklab.rng import seed_everything
from othinklab.runs import PromptStream, TrainResult, eval_samples, eval_settings, prepare_run_dir, run_dir_for
from othinklab.sampling import Rollout, sample_groups
from othinklab.steplog import RunLog, batch_summary, error_rows, merge, metrics_row, rollout_rows
from othinklab.tasks import Sample
from othinklab.trackers import Trackers, check_installed


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    """The learning-rate multiplier per optimizer step: linear warm-up, then constant, linear or cosine."""
    total, warm = cfg.train.total_steps, cfg.train.warmup_steps

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total - warm)
        if cfg.train.lr_schedule == "linear":
            return max(0.0, 1 - frac)
        if cfg.train.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return f


# --------------------------------------------------------------------------- what a step uses
class Stopwatch:
    """Seconds spent in each part of the current step, and the part running now (named in an
    out-of-memory error, so the user knows which knob to turn)."""

    PARTS = ("rollout", "reference", "policy", "optimizer")

    def __init__(self) -> None:
        self.where = "before training"
        self.start_step()

    def start_step(self) -> None:
        self.step_start = time.perf_counter()
        self.seconds = dict.fromkeys(self.PARTS, 0.0)

    @contextlib.contextmanager
    def part(self, key: str, where: str) -> Iterator[None]:
        self.where = where
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] += time.perf_counter() - t0


class _PolicyLogprobs(torch.nn.Module):
    """The policy's gradient-carrying forward as one module, so `DistributedDataParallel` can wrap it
    (it syncs gradients of the parameters used in *its* forward; the rollout and reference passes
    need no sync and call the bare model)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, prompt: dict, ids: torch.Tensor, mask: torch.Tensor, group_size: int, chunk: int) -> Any:
        """(log-probs with gradient, the policy's per-token entropy from the same pass, detached)."""
        return completion_logprobs(self.model, prompt, ids, mask, group_size, chunk, with_entropy=True)


@dataclass
class TrainParts:
    """Everything a step uses that outlives the step: model, reference, optimizer, schedules, data, RNG.

    `sample_fn` and `loss_fn` are the rollout and the loss (`sampling.sample_groups`, `grpo.grpo_loss`
    by default): tests and benchmarks pass their own to `train` instead of patching module globals.
    """

    cfg: Config
    model: Any
    processor: Any
    ref_model: Any | None
    """A frozen copy for full fine-tuning when beta is ever > 0; None under LoRA (adapter disabled instead)."""
    has_reference: bool
    use_lora: bool
    policy: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    schedule: Schedule
    data: PromptStream
    generator: torch.Generator
    ddp: distributed.Dist = field(default_factory=distributed.Dist)
    accuracy_fn: Callable[[str, str], float] | None = None
    sample_fn: Callable[..., Rollout] = sample_groups
    loss_fn: Callable[..., tuple[torch.Tensor, dict[str, float]]] = grpo_loss
    scaler: torch.amp.GradScaler = field(default_factory=precision.no_scaler)  # float16 loss scaling
    reference: Reference | None = None
    """Where reference log-probs come from, and its reset every `kl.reset_reference_every` steps."""


def build_parts(
    cfg: Config,
    model: Any,
    processor: Any,
    ddp: distributed.Dist | None = None,
    sample_fn: Callable[..., Rollout] = sample_groups,
    loss_fn: Callable[..., tuple[torch.Tensor, dict[str, float]]] = grpo_loss,
    accuracy_fn: Callable[[str, str], float] | None = None,
) -> TrainParts:
    """Reference, optimizer, LR and KL schedules, prompt stream and sampling generator for `model`."""
    ddp = ddp or distributed.Dist()
    accuracy_fn = accuracy_fn or load_reward_function(cfg.reward.accuracy_function, timeout_s=cfg.reward.timeout_s)
    device = next(model.parameters()).device
    schedule = schedule_from_config(cfg.kl, cfg.train.total_steps)
    use_lora = is_lora(model)
    # Under LoRA the reference is free (adapter off), so KL is always measured; a full copy only if beta > 0.
    has_reference = use_lora or needs_reference(schedule)
    ref_model = None if use_lora or not has_reference else make_reference(model)
    params = precision.float32_trainable(model)  # adapters (and their AdamW state) float32 even under float16
    policy = distributed.wrap_policy(_PolicyLogprobs(model), ddp, device)
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    return TrainParts(
        cfg=cfg,
        model=model,
        processor=processor,
        ref_model=ref_model,
        has_reference=has_reference,
        use_lora=use_lora,
        policy=policy,
        params=params,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg)),
        schedule=schedule,
        data=PromptStream(cfg),
        generator=torch.Generator(device=device).manual_seed(cfg.train.seed),
        ddp=ddp,
        accuracy_fn=accuracy_fn,
        sample_fn=sample_fn,
        loss_fn=loss_fn,
        scaler=precision.make_scaler(cfg, device),
        reference=Reference(model, ref_model, use_lora, has_reference, cfg.kl.reset_reference_every),
    )


@dataclass
class Counters:
    """Where the run is: optimizer steps done, prompt batches drawn, non-finite steps in a row."""

    step: int = 0
    batch_index: int = 0
    nonfinite_in_a_row: int = 0


# --------------------------------------------------------------------------- phase 1: generate and score
@dataclass
class GenerationBatch:
    """One generation batch: G completions per prompt, their rewards (Eq. 1), group advantages (Eq. 2)
    and the reference and old-policy log-probs, all fixed for the `num_iterations` steps that reuse it."""

    samples: list[Sample]
    rollout: Rollout
    scores: list[RewardBreakdown]
    errors: list[str | None]
    """The reward function's error per completion (None where it scored normally)."""
    rewards: torch.Tensor
    advantages: torch.Tensor
    ref_logp: torch.Tensor | None
    old_logp: torch.Tensor | None
    group_offset: int
    """Index of this batch's first group within the step (over every rank), for the rollout log."""


def generate_and_score(
    parts: TrainParts, global_samples: list[Sample], offset: int = 0, clock: Stopwatch | None = None, beta: float = 0.0
) -> GenerationBatch:
    """Sample G completions for this rank's share of `global_samples`, score them, and compute the
    reference (and, if `num_iterations` > 1, old-policy) log-probs and the advantages. With
    `kl.placement=reward`, `beta` times each completion's summed k1 is taken off its reward first."""
    cfg, ddp, model, clock = parts.cfg, parts.ddp, parts.model, clock or Stopwatch()
    G, chunk = cfg.grpo.num_generations, cfg.grpo.logprob_chunk
    samples = ddp.shard(global_samples)
    with clock.part("rollout", "while sampling completions"):
        model.eval()
        g, shard = cfg.grpo, distributed.row_shard(ddp, len(samples) * G, len(global_samples) * G)
        settings = (G, g.max_completion_length, g.temperature, g.top_k, g.top_p)
        r = parts.sample_fn(model, parts.processor, samples, *settings, generator=parts.generator, shard=shard)
    # Rewards (Eq. 1) and group advantages (Eq. 2); a failing reward scores 0.
    scored = [
        safe_score(text, samples[i // G].solution, cfg.reward.format_weight, parts.accuracy_fn)
        for i, text in enumerate(r.texts)
    ]
    scores = [s for s, _ in scored]
    rewards = torch.tensor([s.total for s in scores])
    ids, mask = r.completion_ids, r.completion_mask
    with clock.part("reference", "computing reference log-probs"), torch.no_grad():
        ref_logp = parts.reference.logprobs(r.prompt, ids, mask, G, chunk) if parts.has_reference else None
        old_logp = completion_logprobs(model, r.prompt, ids, mask, G, chunk) if cfg.grpo.num_iterations > 1 else None
        shaped = rewards
        if cfg.kl.placement == "reward" and beta != 0 and ref_logp is not None:
            logp = old_logp if old_logp is not None else completion_logprobs(model, r.prompt, ids, mask, G, chunk)
            shaped = rewards - beta * sequence_kl_penalty(logp, ref_logp, mask).to(rewards.dtype)
    # Eq. 2 on the (possibly KL-shaped) rewards; `batch` scaling takes its std over every rank's rewards
    batch_std = torch.cat(ddp.gather(shaped)).std() if cfg.grpo.scale_rewards == "batch" and ddp.enabled else None
    adv = group_advantages(shaped, G, scale=cfg.grpo.scale_rewards, batch_std=batch_std)
    first = offset + ddp.rank * len(samples)
    return GenerationBatch(samples, r, scores, [e for _, e in scored], rewards, adv, ref_logp, old_logp, first)


def new_generation_batches(
    parts: TrainParts, counters: Counters, clock: Stopwatch, beta: float = 0.0
) -> list[GenerationBatch]:
    """`gradient_accumulation_steps` fresh generation batches from the next prompt batches of the stream
    (`beta` shapes their rewards under `kl.placement=reward`)."""
    batches = []
    for k in range(parts.cfg.train.gradient_accumulation_steps):
        global_samples = parts.data.batch(counters.batch_index)
        counters.batch_index += 1
        batches.append(generate_and_score(parts, global_samples, k * len(global_samples), clock, beta))
    return batches


# --------------------------------------------------------------------------- phase 2: the loss
def compute_loss(
    parts: TrainParts, batches: list[GenerationBatch], beta: float, clock: Stopwatch | None = None
) -> tuple[dict[str, float], list[torch.Tensor]]:
    """Eq. 4 with weight `beta` on each batch (truncation mask and clip bounds from `cfg.grpo`), backpropagated.
    Returns the loss stats averaged over batches (and ranks; a `token` mean spans them all) and each batch's
    policy log-probs (detached, for the rollout log)."""
    cfg, clock, g = parts.cfg, clock or Stopwatch(), parts.cfg.grpo
    G, chunk, aggregation = g.num_generations, g.logprob_chunk, g.aggregation
    masks = [loss_mask(b.rollout.completion_mask, b.rollout.truncated, g.mask_truncated_completions) for b in batches]
    token_weights = distributed.token_weights(masks, parts.ddp) if aggregation == "token" else None
    with clock.part("policy", "in the policy forward/backward"):
        parts.model.train()
        parts.optimizer.zero_grad(set_to_none=True)
        stats_acc: dict[str, float] = {}
        logps: list[torch.Tensor] = []
        beta = 0.0 if cfg.kl.placement == "reward" else beta  # reward: beta already shaped the advantages
        fixed = {"beta": beta, "epsilon": g.epsilon, "kl_kind": cfg.kl.estimator, "aggregation": aggregation}
        fixed |= {"epsilon_high": g.epsilon_high or None, "max_length": g.max_completion_length}
        for i, (b, mask) in enumerate(zip(batches, masks)):
            r = b.rollout
            logp, entropy = parts.policy(r.prompt, r.completion_ids, r.completion_mask, G, chunk)
            old, ref, adv = b.old_logp, b.ref_logp, b.advantages
            loss, stats = parts.loss_fn(logp, old_logp=old, ref_logp=ref, advantages=adv, mask=mask, **fixed)
            # entropy over every completion token (a property of the policy, truncated or not)
            stats["loss/total"], stats["policy/entropy"] = loss.item(), masked_mean(entropy, r.completion_mask)
            stats, _ = distributed.reduce_stats(stats, mask, parts.ddp, aggregation)
            # `token`: one token mean over every accumulated batch and rank; otherwise the mean over batches
            parts.scaler.scale(loss * token_weights[i] if token_weights else loss / len(batches)).backward()
            logps.append(logp.detach())
            for k, v in stats.items():
                stats_acc[k] = stats_acc.get(k, 0.0) + v / len(batches)
    return stats_acc, logps


# --------------------------------------------------------------------------- phase 3: the update
@dataclass
class StepOutcome:
    grad_norm: float
    """Global gradient norm before clipping."""
    lr: float
    """Learning rate this step used."""
    finite: bool
    """False when the loss or gradient was NaN/inf and the update was skipped."""


def optimizer_step(
    parts: TrainParts, counters: Counters, stats: dict[str, float], clock: Stopwatch | None = None
) -> StepOutcome:
    """Clip and apply the gradients (skipped when the loss or gradient is not finite) and advance the LR
    schedule (the KL schedule observes the step's metrics row after `log_step`)."""
    cfg, clock = parts.cfg, clock or Stopwatch()
    with clock.part("optimizer", "in the optimizer step"):
        max_norm = cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else float("inf")
        parts.scaler.unscale_(parts.optimizer)  # float16: true gradients before clipping; else a no-op
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parts.params, max_norm))
        lr = parts.scheduler.get_last_lr()[0]
        finite = math.isfinite(stats["loss/total"]) and math.isfinite(grad_norm)
        precision.apply_update(parts.scaler, parts.optimizer, finite)  # a step, or the gradients dropped
        bad = precision.counts_as_nonfinite(parts.scaler, stats["loss/total"], grad_norm)  # not a scale overflow
        counters.nonfinite_in_a_row = 0 if finite else counters.nonfinite_in_a_row + bad
        parts.scheduler.step()
    return StepOutcome(grad_norm, lr, finite)


# --------------------------------------------------------------------------- phase 4: logging
def log_step(
    parts: TrainParts,
    log: RunLog,
    step: int,
    beta: float,
    batches: list[GenerationBatch],
    stats: dict[str, float],
    outcome: StepOutcome,
    clock: Stopwatch,
    extra: dict[str, float] | None = None,
    logps: list[torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Build the step's metrics row (plus `extra`, e.g. `eval/...` keys) and rollout/error rows (with
    `logps`, each batch's policy log-probs from `compute_loss`) on every rank; rank 0 writes them all."""
    cfg, ddp, G = parts.cfg, parts.ddp, parts.cfg.grpo.num_generations
    clock.where = "while logging"
    everyone = ddp.gather([batch_summary(b) for b in batches])
    merged = [merge([rank_s[i] for rank_s in everyone]) for i in range(len(batches))]
    step_s = time.perf_counter() - clock.step_start
    row = metrics_row(step, beta, merged, G, stats, outcome, clock.seconds, step_s)
    row.update(extra or {})
    log_this = cfg.train.log_rollouts and (step % cfg.grpo.num_iterations == 0)
    logps = logps or [None] * len(batches)
    rows = [rollout_rows(step, b, G, parts.processor, lp) if log_this else ([], {}) for b, lp in zip(batches, logps)]
    errors = [error_rows(step, b, G) for b in batches]
    log.write_step(row, ddp.gather((rows, errors)))
    return row


# --------------------------------------------------------------------------- the loop
def train(
    cfg: Config,
    resume: bool = False,
    callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
    progress: bool = True,
    model_and_processor: tuple[Any, Any] | None = None,
    sample_fn: Callable[..., Rollout] = sample_groups,
    loss_fn: Callable[..., tuple[torch.Tensor, dict[str, float]]] = grpo_loss,
) -> TrainResult:
    """Run GRPO with the configured KL schedule; returns the trained model and the run directory.

    Under `torchrun`/`accelerate launch` each process takes its share of every batch's prompts (whole
    groups); gradients are averaged by DDP and rank 0 alone writes logs, rollouts and checkpoints.
    `callbacks` get each metrics row; `sample_fn`/`loss_fn` replace the rollout and the loss. The run
    directory's lock (`othinklab.runlock`) is held throughout: a second writer is refused, naming this one.
    """
    writer = os.environ.get("RANK", "0") == "0"  # the process that writes the run directory
    what = "train --resume" if resume else "train"
    with runlock.hold(run_dir_for(cfg), what) if writer else contextlib.nullcontext():
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        ddp = distributed.setup()
        # a bad reward spec fails before any file is made
        accuracy_fn = load_reward_function(cfg.reward.accuracy_function, timeout_s=cfg.reward.timeout_s)
        check_installed(cfg.train.report_to)  # so does a tracker whose package is missing
        if ddp.is_main:  # rank 0 creates (or checks) the run directory; every rank then knows its path
            prepare_run_dir(cfg, resume)
        ddp.barrier()
        run = run_dir_for(cfg)
        seed_everything(cfg.train.seed)
        model, processor = model_and_processor or load_model(cfg.model, device=distributed.model_device(ddp))
        parts = build_parts(cfg, model, processor, ddp, sample_fn, loss_fn, accuracy_fn)
        counters = Counters()
        if resume:
            counters = Counters(**ckpt_io.resume_training(run, parts, ddp.is_main))
            ddp.barrier()
        trackers = Trackers(cfg.train.report_to if ddp.is_main else (), run, run.name, to_dict(cfg))
        log = RunLog(run, ddp.is_main, [*(callbacks or []), trackers.log, AllTruncatedGuard(cfg.grpo)])
        held_out = eval_samples(cfg)[: cfg.train.eval_prompts] if cfg.train.eval_every and ddp.is_main else []
        disable = not (progress and ddp.is_main)
        bar = tqdm(
            total=cfg.train.total_steps, initial=counters.step, desc=run.name, disable=disable, dynamic_ncols=True
        )
        start, clock = time.perf_counter(), Stopwatch()
        batches: list[GenerationBatch] = []
        try:
            while counters.step < cfg.train.total_steps:
                clock.start_step()
                beta = parts.schedule(counters.step)
                # A new generation batch every num_iterations optimizer steps (TRL's semantics).
                if counters.step % cfg.grpo.num_iterations == 0 or not batches:
                    batches = new_generation_batches(parts, counters, clock, beta)
                stats, logps = compute_loss(parts, batches, beta, clock)
                outcome = optimizer_step(parts, counters, stats, clock)
                done, every, total = counters.step + 1, cfg.train.eval_every, cfg.train.total_steps
                evals = periodic_eval(
                    model, processor, held_out, done, every, total, eval_settings(cfg), cfg.train.seed
                )
                row = log_step(parts, log, counters.step, beta, batches, stats, outcome, clock, evals, logps)
                parts.schedule.observe(row)  # adaptive: the measured KL; accuracy: the training accuracy
                parts.reference.after_step(done)  # the reference becomes the policy every kl.reset_reference_every
                counters.step += 1
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward/total']:.2f}", beta=f"{beta:.3f}", kl=f"{row['kl/value']:.3f}")
                _stop_if_nonfinite(cfg, counters, run)
                _checkpoint_if_due(parts, run, counters, clock)
        except torch.OutOfMemoryError:
            raise TrainingError(f"step {counters.step}: " + oom_message(cfg, clock.where)) from None
        finally:
            bar.close()
            log.close()
            trackers.close()
        model.eval()
        return TrainResult(run, model, processor, counters.step, time.perf_counter() - start)


def _stop_if_nonfinite(cfg: Config, counters: Counters, run: Path) -> None:
    """Stop after more than `train.max_nonfinite_steps` skipped updates in a row, saying what to change."""
    if counters.nonfinite_in_a_row > cfg.train.max_nonfinite_steps:
        latest = ckpt_io.latest_checkpoint(run / "checkpoints")
        raise TrainingError(
            f"step {counters.step - 1}: the loss or gradient was NaN/inf in {counters.nonfinite_in_a_row} steps in "
            f"a row (more than train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}); those updates were "
            "skipped. Lower train.learning_rate, keep train.max_grad_norm > 0, or use model.dtype "
            "float32/bfloat16 rather than float16. Last complete checkpoint: "
            f"{str(latest) if latest else 'none'}; logs are in {str(run)!r}"
        )


def _checkpoint_if_due(parts: TrainParts, run: Path, counters: Counters, clock: Stopwatch) -> None:
    """Save every `train.save_every` steps at generation-batch boundaries (so a resume regenerates nothing
    it had already used), and always at the end, even mid-batch (a finished run has nothing left to redo).
    `save_checkpoint` refuses NaN/inf weights, ending the run with the last good checkpoint named."""
    cfg, step = parts.cfg, counters.step
    last = step == cfg.train.total_steps
    due = last or (cfg.train.save_every and step % cfg.train.save_every == 0)
    if not due or (step % cfg.grpo.num_iterations and not last):
        return
    clock.where = "while saving a checkpoint"
    if parts.ddp.is_main:
        counts = {"batch_index": counters.batch_index, "nonfinite_in_a_row": counters.nonfinite_in_a_row}
        ckpt_io.save_training(run / "checkpoints", step, parts, counts, keep=cfg.train.keep_checkpoints)
    parts.ddp.barrier()
