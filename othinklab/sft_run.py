"""The SFT baseline as a run: config in, run directory out, laid out like a GRPO run.

Why: the paper compares GRPO(-D) with SFT on the same data, so SFT must see the same seeded prompts, use
the same LoRA / 4-bit options and leave the same files (`config.yaml`, `metrics.jsonl`, a checkpoint) for
the evaluation, plots and grid to read. The objective and the loop are in `sft`.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from othinklab import checkpoint as ckpt_io
from othinklab import runlock
from othinklab.config import Config
from othinklab.metrics import JsonlWriter
from othinklab.models import load_model
from othinklab.rng import seed_everything
from othinklab.runs import PromptStream, TrainResult, prepare_run_dir, run_dir_for
from othinklab.sft import train_sft


def run_sft(cfg: Config, progress: bool = True, model_and_processor: tuple[Any, Any] | None = None) -> TrainResult:
    """The SFT baseline as a run: same data stream, LoRA / 4-bit options and run-directory layout as GRPO.

    With `sft.batch_size` equal to `grpo.prompts_per_step` and `sft.steps` equal to `train.total_steps`,
    SFT sees exactly the prompts the GRPO run sees (the same seeded `PromptStream`), with the sample's
    reasoning as target. Writes `config.yaml`, `metrics.jsonl` (step, loss, lr, time) and a final checkpoint.
    The run directory's lock (`othinklab.runlock`) is held throughout: a second writer is refused.
    """
    with runlock.hold(run_dir_for(cfg), "sft"):
        return _run_sft(cfg, progress, model_and_processor)


def _run_sft(cfg: Config, progress: bool, model_and_processor: tuple[Any, Any] | None) -> TrainResult:
    """`run_sft` with the run directory locked."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run = prepare_run_dir(cfg, resume=False)
    seed_everything(cfg.train.seed)
    model, processor = model_and_processor or load_model(cfg.model)
    data = PromptStream(cfg, per_batch=cfg.sft.batch_size)
    batches = (data.batch(i) for i in range(cfg.sft.steps))
    log = JsonlWriter(run / "metrics.jsonl")
    bar = tqdm(total=cfg.sft.steps, desc=run.name, disable=not progress, dynamic_ncols=True)
    last = [time.perf_counter()]

    def on_step(step: int, loss: float) -> None:
        now = time.perf_counter()
        log.write({"step": step, "loss/total": loss, "lr": cfg.sft.learning_rate, "time/step_s": now - last[0]})
        log.flush()
        last[0] = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        result = train_sft(
            model, processor, batches, cfg.sft.steps, cfg.sft.learning_rate, cfg.train.max_grad_norm, on_step
        )
    finally:
        bar.close()
        log.close()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.sft.learning_rate)  # state not kept: SFT runs are not resumed
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ckpt_io.save_checkpoint(
        run / "checkpoints", cfg.sft.steps, model, opt, sched, {"method": "sft", "batch_index": cfg.sft.steps}
    )
    return TrainResult(run, model, processor, cfg.sft.steps, result.seconds)
