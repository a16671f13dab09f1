"""The GRPO(-D) training loop: sample prompts -> rollout -> rewards -> advantages -> beta(s) -> loss -> step.

Why: the whole algorithm should fit on one screen (nanoGPT style); the math lives in `grpo.py` and
`kl.py`, sampling in `rollout.py`, rewards in `rewards.py`. Every optimizer step appends a row to
`metrics.jsonl` and every completion to `rollouts.jsonl`; checkpoints are atomic and resumable.

Simplified versus R1-V / TRL: data parallelism only (DDP; no model sharding); `num_iterations` reuses a
generation batch for that many optimizer steps (TRL's semantics), with old log-probs computed once per
batch; with LoRA the reference is the adapter-disabled model, so the reference log-probs cost one extra
forward and no memory; the KL is *measured* every step whenever a reference exists, even at beta = 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from othinklab import checkpoint as ckpt_io
from othinklab import distributed
from othinklab.config import Config, to_dict, to_yaml
from othinklab.errors import TrainingError, UserError
from othinklab.grpo import group_advantages, grpo_loss, zero_spread_fraction
from othinklab.kl import kl_estimate, needs_reference, schedule_from_config
from othinklab.metrics import JsonlWriter, truncate_from_step
from othinklab.models import is_lora, load_model, make_reference
from othinklab.rewards import load_reward_function, safe_score
from othinklab.rollout import RowShard, completion_logprobs, sample_groups
from othinklab.tasks import EVAL_SPLITS, Sample, load_r1v, make_task
from othinklab.tiny import seed_everything


# --------------------------------------------------------------------------- data
class PromptStream:
    """Seeded prompt batches addressed by index, so a resumed run draws exactly the same prompts.

    Fresh synthetic samples for every batch (`num_train == 0`), or a fixed pool (few-shot or a
    dataset file) visited in a seeded order that is reshuffled every epoch.
    """

    def __init__(self, cfg: Config, per_batch: int | None = None):
        self.cfg = cfg
        self.per_batch = per_batch or cfg.grpo.prompts_per_step
        self.task = make_task(cfg.task.name)
        self.pool: list[Sample] | None = None
        if cfg.task.data_path:
            self.pool = load_r1v(
                cfg.task.data_path,
                cfg.task.name,
                image_root=cfg.task.image_root or None,
                limit=cfg.task.num_train or None,
                seed=cfg.task.seed,
            )
        elif cfg.task.num_train:
            self.pool = self.task.samples(cfg.task.num_train, split="train", seed=cfg.task.seed)
        if self.pool is not None and len(self.pool) == 0:
            raise UserError(f"task.data_path={cfg.task.data_path!r} holds no usable rows")

    def batch(self, index: int) -> list[Sample]:
        if self.pool is None:
            return self.task.samples(self.per_batch, split="train", seed=self.cfg.task.seed * 1_000_003 + index + 1)
        n = len(self.pool)
        out = []
        for k in range(index * self.per_batch, (index + 1) * self.per_batch):
            epoch, pos = divmod(k, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.task.seed * 7919 + epoch))
            out.append(self.pool[int(order[pos])])
        return out


def eval_samples(cfg: Config) -> list[Sample]:
    """The held-out prompts evaluated before and after training (never seen in training)."""
    if cfg.task.eval_data_path:
        return load_r1v(
            cfg.task.eval_data_path,
            cfg.task.name,
            image_root=cfg.task.image_root or None,
            limit=cfg.task.num_eval,
            seed=cfg.task.seed,
        )
    split = cfg.task.eval_split or EVAL_SPLITS[cfg.task.name]
    return make_task(cfg.task.name).samples(cfg.task.num_eval, split=split, seed=10_000 + cfg.task.seed)


# --------------------------------------------------------------------------- run directory
def run_dir_for(cfg: Config) -> Path:
    name = cfg.train.run_name or f"{cfg.task.name}-{cfg.kl.schedule}-seed{cfg.train.seed}"
    return Path(cfg.train.output_dir) / name


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    """Create the run directory; refuse to mix two configs or to overwrite a run without `--resume`."""
    run = run_dir_for(cfg)
    cfg_path = run / "config.yaml"
    if cfg_path.exists():
        existing = yaml.safe_load(cfg_path.read_text())
        if existing != yaml.safe_load(to_yaml(cfg)):
            diff = [
                f"{s}.{k}" for s in existing for k in existing[s] if to_dict(cfg).get(s, {}).get(k) != existing[s][k]
            ]
            raise UserError(
                f"run directory {str(run)!r} already holds a run with another config (differs in {', '.join(diff[:5]) or 'sections'}); "
                "choose another train.run_name or delete that directory"
            )
        if not resume and (run / "metrics.jsonl").exists():
            raise UserError(
                f"run directory {str(run)!r} already holds this run; pass --resume to continue it, "
                "or choose another train.run_name"
            )
    elif resume:
        raise UserError(f"--resume: run directory {str(run)!r} has no config.yaml to resume from")
    run.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        tmp = cfg_path.with_suffix(".yaml.tmp")
        tmp.write_text(to_yaml(cfg))
        tmp.replace(cfg_path)
    return run


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    run_dir: Path
    model: Any
    processor: Any
    steps_done: int
    seconds: float


def lr_lambda(cfg: Config) -> Callable[[int], float]:
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


def load_policy(cfg: Config, device: str | None = None) -> tuple[Any, Any]:
    """The configured model and processor, with LoRA / 4-bit / checkpointing as the config says."""
    m = cfg.model
    return load_model(
        m.name,
        device=device,
        dtype=m.dtype,
        load_in_4bit=m.load_in_4bit,
        lora=m.lora,
        lora_r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        lora_target_modules=m.lora_target_modules,
        lora_include_vision=m.lora_include_vision,
        gradient_checkpointing=m.gradient_checkpointing,
        max_pixels=m.max_pixels,
    )


class _PolicyLogprobs(torch.nn.Module):
    """The policy's gradient-carrying forward as one module, so `DistributedDataParallel` can wrap it
    (it syncs gradients of the parameters used in *its* forward; the rollout and reference passes
    need no sync and call the bare model)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, prompt: dict, ids: torch.Tensor, mask: torch.Tensor, group_size: int, chunk: int) -> torch.Tensor:
        return completion_logprobs(self.model, prompt, ids, mask, group_size, chunk)


OOM_HELP = (
    "ran out of memory {where}. Lower it with (each a config field): grpo.num_generations (G, now {G}), "
    "grpo.prompts_per_step (now {P}), grpo.max_completion_length (now {T}), model.load_in_4bit=true (now {q}), "
    "model.gradient_checkpointing=true (now {gc}), model.max_pixels (image size, now {px}), grpo.logprob_chunk "
    "(now {chunk}); completed checkpoints and logs are kept, resume with --resume"
)


def oom_message(cfg: Config, where: str) -> str:
    """What to turn down after an out-of-memory error, with the current values."""
    return OOM_HELP.format(
        where=where,
        G=cfg.grpo.num_generations,
        P=cfg.grpo.prompts_per_step,
        T=cfg.grpo.max_completion_length,
        q=cfg.model.load_in_4bit,
        gc=cfg.model.gradient_checkpointing,
        px=cfg.model.max_pixels,
        chunk=cfg.grpo.logprob_chunk,
    )


def train(
    cfg: Config,
    resume: bool = False,
    callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
    progress: bool = True,
    model_and_processor: tuple[Any, Any] | None = None,
) -> TrainResult:
    """Run GRPO with the configured KL schedule; returns the trained model and the run directory.

    Under `torchrun`/`accelerate launch` each process takes its share of every batch's prompts (whole
    groups); gradients are averaged by DDP and rank 0 alone writes logs, rollouts and checkpoints.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ddp = distributed.setup()
    accuracy_fn = load_reward_function(cfg.reward.accuracy_function)
    if ddp.is_main:
        run = prepare_run_dir(cfg, resume)
    ddp.barrier()
    run = run_dir_for(cfg)
    seed_everything(cfg.train.seed)
    model, processor = model_and_processor or load_policy(cfg, device=distributed.model_device(ddp))
    device = next(model.parameters()).device
    schedule = schedule_from_config(cfg.kl, cfg.train.total_steps)
    use_lora = is_lora(model)
    # Under LoRA the reference is free (adapter off), so KL is always measured; a full copy only if beta > 0.
    has_reference = use_lora or needs_reference(schedule)
    ref_model = None if use_lora or not has_reference else make_reference(model)
    params = [p for p in model.parameters() if p.requires_grad]
    policy = _PolicyLogprobs(model)
    if ddp.enabled:
        policy = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    data = PromptStream(cfg)
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)
    step, batch_index, nonfinite_in_a_row = 0, 0, 0

    logs = ("metrics.jsonl", "rollouts.jsonl", "reward_errors.jsonl")
    if resume:
        latest = ckpt_io.latest_checkpoint(run / "checkpoints")
        if latest is not None:
            state, training = ckpt_io.load_state(latest)
            ckpt_io.load_weights(model, latest)
            optimizer.load_state_dict(training["optimizer"])
            scheduler.load_state_dict(training["scheduler"])
            ckpt_io.set_rng_state(training["rng"])
            gen.set_state(training["generator"])
            schedule.load_state_dict(state["kl_schedule"])
            step, batch_index = state["step"], state["batch_index"]
            nonfinite_in_a_row = state.get("nonfinite_in_a_row", 0)
        if ddp.is_main:
            ckpt_io.remove_partial(run / "checkpoints")
            for name in logs:
                truncate_from_step(run / name, step)
        ddp.barrier()

    writers = {name: JsonlWriter(run / name) for name in logs} if ddp.is_main else {}
    G, chunk = cfg.grpo.num_generations, cfg.grpo.logprob_chunk
    bar = tqdm(
        total=cfg.train.total_steps,
        initial=step,
        desc=run.name,
        disable=not (progress and ddp.is_main),
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    batches: list[dict[str, Any]] = []
    phase = "before training"
    try:
        while step < cfg.train.total_steps:
            t_step = time.perf_counter()
            times = {"rollout": 0.0, "reference": 0.0, "policy": 0.0, "optimizer": 0.0}
            beta = schedule(step)
            # 1. New generation batch every num_iterations optimizer steps (TRL's semantics).
            if step % cfg.grpo.num_iterations == 0 or not batches:
                batches = []
                for _ in range(cfg.train.gradient_accumulation_steps):
                    global_samples = data.batch(batch_index)
                    samples = ddp.shard(global_samples)
                    batch_index += 1
                    phase = "while sampling completions"
                    t0 = time.perf_counter()
                    model.eval()
                    r = sample_groups(
                        model,
                        processor,
                        samples,
                        G,
                        cfg.grpo.max_completion_length,
                        cfg.grpo.temperature,
                        cfg.grpo.top_k,
                        cfg.grpo.top_p,
                        generator=gen,
                        shard=RowShard(ddp.rank * len(samples) * G, len(global_samples) * G, ddp.all_done)
                        if ddp.enabled
                        else None,
                    )
                    times["rollout"] += time.perf_counter() - t0
                    # 2. Rewards (Eq. 1) and group advantages (Eq. 2); a failing reward scores 0.
                    scored = [
                        safe_score(text, samples[i // G].solution, cfg.reward.format_weight, accuracy_fn)
                        for i, text in enumerate(r.texts)
                    ]
                    scores = [s for s, _ in scored]
                    rewards = torch.tensor([s.total for s in scores])
                    adv = group_advantages(rewards, G)
                    # 3. Reference (and old-policy) log-probs, once per generation batch.
                    phase = "computing reference log-probs"
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        ref_logp = None
                        if has_reference:
                            ref_logp = completion_logprobs(
                                model if use_lora else ref_model,
                                r.prompt,
                                r.completion_ids,
                                r.completion_mask,
                                G,
                                chunk,
                                disable_adapter=use_lora,
                            )
                        old_logp = None
                        if cfg.grpo.num_iterations > 1:
                            old_logp = completion_logprobs(
                                model, r.prompt, r.completion_ids, r.completion_mask, G, chunk
                            )
                    times["reference"] += time.perf_counter() - t0
                    batches.append(
                        {
                            "samples": samples,
                            "rollout": r,
                            "scores": scores,
                            "errors": [e for _, e in scored],
                            "rewards": rewards,
                            "adv": adv,
                            "ref_logp": ref_logp,
                            "old_logp": old_logp,
                            "group_offset": len(batches) * len(global_samples) + ddp.rank * len(samples),
                        }
                    )
            # 4. The loss (Eq. 4) with beta(s), gradients accumulated over the generation batches.
            phase = "in the policy forward/backward"
            t0 = time.perf_counter()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            stats_acc: dict[str, float] = {}
            for b in batches:
                r = b["rollout"]
                logp = policy(r.prompt, r.completion_ids, r.completion_mask, G, chunk)
                loss, stats = grpo_loss(
                    logp,
                    b["old_logp"],
                    b["ref_logp"],
                    b["adv"],
                    r.completion_mask,
                    beta,
                    cfg.grpo.epsilon,
                    cfg.kl.estimator,
                    cfg.grpo.aggregation,
                )
                stats["loss/total"] = loss.item()
                stats, total_tokens = _reduce_stats(stats, r.completion_mask, ddp, cfg.grpo.aggregation)
                if ddp.enabled and cfg.grpo.aggregation == "token":
                    # DDP averages gradients over ranks; a token mean over the whole batch needs this weight
                    loss = loss * float(r.completion_mask.sum()) * ddp.world / max(total_tokens, 1.0)
                (loss / len(batches)).backward()
                b["logp"] = logp.detach()
                for k, v in stats.items():
                    stats_acc[k] = stats_acc.get(k, 0.0) + v / len(batches)
            times["policy"] = time.perf_counter() - t0
            # 5. Optimizer step, skipped when the loss or the gradient is not finite.
            phase = "in the optimizer step"
            t0 = time.perf_counter()
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    params, cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else float("inf")
                )
            )
            lr = scheduler.get_last_lr()[0]
            finite = math.isfinite(stats_acc["loss/total"]) and math.isfinite(grad_norm)
            if finite:
                optimizer.step()
                nonfinite_in_a_row = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                nonfinite_in_a_row += 1
            scheduler.step()
            if schedule.name == "adaptive" and math.isfinite(stats_acc["kl/value"]):
                schedule.update(stats_acc["kl/value"])
            times["optimizer"] = time.perf_counter() - t0
            # 6. Log this step (rank 0, with every rank's completions), then checkpoint.
            phase = "while logging"
            summaries = [_batch_summary(b) for b in batches]
            everyone = ddp.gather(summaries)
            merged = [_merge([rank_s[i] for rank_s in everyone]) for i in range(len(batches))]
            row = _metrics_row(
                step,
                beta,
                merged,
                G,
                stats_acc,
                stats_acc["loss/total"],
                grad_norm,
                lr,
                times,
                time.perf_counter() - t_step,
            )
            row["skipped/nonfinite"] = 0.0 if finite else 1.0
            log_this = cfg.train.log_rollouts and (step % cfg.grpo.num_iterations == 0)
            rows = [_rollout_rows(step, b, G, processor) if log_this else ([], {}) for b in batches]
            errors = [_error_rows(step, b, G) for b in batches]
            gathered = ddp.gather((rows, errors))
            if ddp.is_main:
                writers["metrics.jsonl"].write(row)
                for rank_rows, rank_errors in gathered:
                    for (rollout_rows, images), err_rows in zip(rank_rows, rank_errors):
                        for name, image in images.items():
                            _save_image(run / "images", name, image)
                        for rr in rollout_rows:
                            writers["rollouts.jsonl"].write(rr)
                        for er in err_rows:
                            writers["reward_errors.jsonl"].write(er)
                for w in writers.values():
                    w.flush()
                for cb in callbacks or []:
                    cb(row)
            step += 1
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward/total']:.2f}", beta=f"{beta:.3f}", kl=f"{row['kl/value']:.3f}")
            if nonfinite_in_a_row > cfg.train.max_nonfinite_steps:
                latest = ckpt_io.latest_checkpoint(run / "checkpoints")
                raise TrainingError(
                    f"step {step - 1}: the loss or gradient was NaN/inf in {nonfinite_in_a_row} steps in a row "
                    f"(more than train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}); those updates were "
                    "skipped. Lower train.learning_rate, keep train.max_grad_norm > 0, or use model.dtype "
                    "float32/bfloat16 rather than float16. Last complete checkpoint: "
                    f"{str(latest) if latest else 'none'}; logs are in {str(run)!r}"
                )
            if step == cfg.train.total_steps or (cfg.train.save_every and step % cfg.train.save_every == 0):
                if step % cfg.grpo.num_iterations == 0:  # only at generation-batch boundaries (exact resume)
                    phase = "while saving a checkpoint"
                    if ddp.is_main:
                        ckpt_io.save_checkpoint(
                            run / "checkpoints",
                            step,
                            model,
                            optimizer,
                            scheduler,
                            {
                                "batch_index": batch_index,
                                "kl_schedule": schedule.state_dict(),
                                "nonfinite_in_a_row": nonfinite_in_a_row,
                                "torch": {"generator": gen.get_state()},
                            },
                            keep=cfg.train.keep_checkpoints,
                        )
                    ddp.barrier()
    except torch.OutOfMemoryError:
        raise TrainingError(f"step {step}: " + oom_message(cfg, phase)) from None
    finally:
        bar.close()
        for w in writers.values():
            w.close()
    model.eval()
    return TrainResult(run, model, processor, step, time.perf_counter() - start)


TOKEN_WEIGHTED = ("kl/value", "clip/fraction", "ratio/mean")
"""Stats that are means over completion tokens (the rest are means over completions, or the loss)."""


def _reduce_stats(
    stats: dict[str, float], mask: torch.Tensor, ddp: distributed.Dist, aggregation: str
) -> tuple[dict[str, float], float]:
    """This batch's loss stats over every rank, weighted as one process over the whole batch would, and
    the batch's completion-token count over every rank (one collective for all of them)."""
    tokens = float(mask.sum())
    if not ddp.enabled:
        return dict(stats), tokens
    keys = list(stats)
    weighted = [k in TOKEN_WEIGHTED or (aggregation == "token" and k.startswith("loss/")) for k in keys]
    *sums, total_tokens = ddp.sum([stats[k] * tokens if w else stats[k] for k, w in zip(keys, weighted)] + [tokens])
    out = {k: v / max(total_tokens, 1.0) if w else v / ddp.world for k, v, w in zip(keys, sums, weighted)}
    return out, total_tokens


def _batch_summary(b: dict[str, Any]) -> dict[str, Any]:
    """What the metrics row needs from one generation batch, small enough to gather across ranks."""
    r = b["rollout"]
    return {
        "rewards": b["rewards"],
        "adv": b["adv"],
        "accuracy": [s.accuracy for s in b["scores"]],
        "format": [s.format for s in b["scores"]],
        "lengths": r.lengths.cpu(),
        "truncated": r.truncated.cpu(),
        "errors": sum(e is not None for e in b["errors"]),
    }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch summaries of all ranks as one (rank order = the single-process order)."""
    out: dict[str, Any] = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.cat(vals)
        elif isinstance(vals[0], list):
            out[k] = [x for v in vals for x in v]
        else:
            out[k] = sum(vals)
    return out


def _metrics_row(
    step: int,
    beta: float,
    batches: list[dict],
    G: int,
    stats: dict[str, float],
    loss: float,
    grad_norm: float,
    lr: float,
    times: dict[str, float],
    step_s: float,
) -> dict[str, Any]:
    rewards = torch.cat([b["rewards"] for b in batches])
    adv = torch.cat([b["adv"] for b in batches])
    acc = [a for b in batches for a in b["accuracy"]]
    fmt = [f for b in batches for f in b["format"]]
    lengths = torch.cat([b["lengths"] for b in batches]).float()
    truncated = torch.cat([b["truncated"] for b in batches]).float()
    return {
        "step": step,
        "kl/beta": beta,
        "kl/value": stats.get("kl/value", float("nan")),
        "reward/total": rewards.mean().item(),
        "reward/accuracy": sum(acc) / len(acc),
        "reward/format": sum(fmt) / len(fmt),
        "reward/std": rewards.view(-1, G).std(dim=1).mean().item(),
        "reward/errors": sum(b["errors"] for b in batches),
        "advantage/abs_mean": adv.abs().mean().item(),
        "advantage/max": adv.max().item(),
        "groups/zero_spread": zero_spread_fraction(rewards, G),
        "completion/length": lengths.mean().item(),
        "completion/truncated": truncated.mean().item(),
        "clip/fraction": stats.get("clip/fraction", 0.0),
        "ratio/mean": stats.get("ratio/mean", 1.0),
        "loss/total": loss,
        "loss/policy": stats.get("loss/policy", 0.0),
        "loss/kl": stats.get("loss/kl", 0.0),
        "grad/norm": grad_norm,
        "lr": lr,
        "time/step_s": step_s,
        "time/rollout_s": times["rollout"],
        "time/reference_s": times["reference"],
        "time/policy_s": times["policy"],
        "time/optimizer_s": times["optimizer"],
    }


def _rollout_rows(step: int, b: dict[str, Any], G: int, processor: Any) -> tuple[list[dict], dict[str, Any]]:
    """One row per completion, with its tokens, their log-probs and per-token KL to the reference (k3)
    so the rollout inspector can colour them; and the prompt images by file name (saved once)."""
    r = b["rollout"]
    tok = processor.tokenizer
    logp = b.get("logp")
    ref = b.get("ref_logp")
    kl = kl_estimate(logp, ref, "k3") if logp is not None and ref is not None else None
    rows, images = [], {}
    for i, text in enumerate(r.texts):
        s, sc = b["samples"][i // G], b["scores"][i]
        n = int(r.lengths[i])
        name = _image_name(s)
        images.setdefault(name, s.image)
        rows.append(
            {
                "step": step,
                "prompt_id": s.id,
                "group": b["group_offset"] + i // G,
                "sample": i % G,
                "problem": s.problem,
                "answer": s.answer,
                "completion": text,
                "reward": sc.total,
                "accuracy": sc.accuracy,
                "format": sc.format,
                "advantage": float(b["adv"][i]),
                "length": n,
                "truncated": bool(r.truncated[i]),
                "reward_error": b["errors"][i],
                "image": f"images/{name}",
                "tokens": tok.batch_decode([[t] for t in r.completion_ids[i, :n].tolist()]),
                "token_logprobs": [round(float(v), 4) for v in logp[i, :n]] if logp is not None else None,
                "token_kl": [round(float(v), 5) for v in kl[i, :n]] if kl is not None else None,
            }
        )
    return rows, images


def _error_rows(step: int, b: dict[str, Any], G: int) -> list[dict[str, Any]]:
    """Completions whose reward function failed, with the error (written even when rollouts are not)."""
    return [
        {
            "step": step,
            "prompt_id": b["samples"][i // G].id,
            "sample": i % G,
            "completion": b["rollout"].texts[i],
            "solution": b["samples"][i // G].solution,
            "error": err,
        }
        for i, err in enumerate(b["errors"])
        if err is not None
    ]


def _image_name(sample: Sample) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample.id) + ".png"


def _save_image(folder: Path, name: str, image: Any) -> None:
    """Write a prompt image once (atomically), so inspectors can show what the model saw."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        image.convert("RGB").save(tmp, format="PNG")
        tmp.replace(path)
