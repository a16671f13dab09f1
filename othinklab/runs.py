"""Run-directory plumbing shared by GRPO, SFT, the demo and the grid: where a run lives, which prompts it
sees, and how its files are written.

Why: every method must draw the same seeded prompts and lay out its run directory the same way, and
none of them should import the GRPO loop for that. Every file written here (and by `checkpoint`,
`metrics` and `grid`) goes through `atomic_write`, so a kill mid-write never leaves a torn file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from othinklab.bounds import read_run_config
from othinklab.config import Config, load_config, to_dict, to_yaml
from othinklab.errors import UserError
from othinklab.tasks import EVAL_SPLITS, Sample, load_r1v, make_task, with_prompt

EVAL_SEED = 10_000
"""Offset of the held-out prompts' seed (`EVAL_SEED + task.seed`): far from any training stream's seeds."""


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write `path` via a hidden temporary file in the same directory, then rename it into place (atomic on
    POSIX: readers see the old file or the new one, never half of it). `content` is text, bytes, or a function
    that writes the temporary path it is given (e.g. an image's `save`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@dataclass
class TrainResult:
    """What a training run (GRPO or SFT) returns: its directory, the trained model and the time taken."""

    run_dir: Path
    model: Any
    processor: Any
    steps_done: int
    seconds: float


# --------------------------------------------------------------------------- prompts
class PromptStream:
    """Seeded prompt batches addressed by index, so a resumed run draws exactly the same prompts: fresh
    synthetic samples for every batch (`num_train == 0`), or a fixed pool (few-shot or a dataset file)
    visited in a seeded order reshuffled every epoch."""

    def __init__(self, cfg: Config, per_batch: int | None = None):
        self.cfg = cfg
        self.per_batch = per_batch or cfg.grpo.prompts_per_step
        self.task = make_task(cfg.task.name)
        self.pool: list[Sample] | None = None
        if cfg.task.data_path:
            self.pool = _load_data(cfg, cfg.task.data_path, cfg.task.num_train or None)
        elif cfg.task.num_train:
            self.pool = self.task.samples(cfg.task.num_train, split="train", seed=cfg.task.seed)
        if self.pool is not None and len(self.pool) == 0:
            raise UserError(f"task.data_path={cfg.task.data_path!r} holds no usable rows")

    def batch(self, index: int) -> list[Sample]:
        """The `index`-th batch, its prompts asking for `task.prompt`'s format."""
        return with_prompt(self._batch(index), self.cfg.task.prompt)

    def _batch(self, index: int) -> list[Sample]:
        if self.pool is None:
            return self.task.samples(self.per_batch, split="train", seed=self.cfg.task.seed * 1_000_003 + index + 1)
        n = len(self.pool)
        out = []
        for k in range(index * self.per_batch, (index + 1) * self.per_batch):
            epoch, pos = divmod(k, n)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.task.seed * 7919 + epoch))
            out.append(self.pool[int(order[pos])])
        return out


def _load_data(cfg: Config, path: str, limit: int | None) -> list[Sample]:
    """An R1-V file or hub dataset of the configured task, with the task's image root, seed and pixel limit."""
    kwargs = {"image_root": cfg.task.image_root or None, "seed": cfg.task.seed, "max_pixels": cfg.model.max_pixels}
    return load_r1v(path, cfg.task.name, limit=limit, **kwargs)


def eval_samples(cfg: Config) -> list[Sample]:
    """The held-out prompts every evaluation scores (never seen in training), in `task.prompt`'s format."""
    if cfg.task.eval_data_path:
        return with_prompt(_load_data(cfg, cfg.task.eval_data_path, cfg.task.num_eval), cfg.task.prompt)
    split = cfg.task.eval_split or EVAL_SPLITS[cfg.task.name]
    samples = make_task(cfg.task.name).samples(cfg.task.num_eval, split=split, seed=EVAL_SEED + cfg.task.seed)
    return with_prompt(samples, cfg.task.prompt)


def eval_settings(cfg: Config) -> dict[str, Any]:
    """`evaluate`'s settings from the config's `eval` section (and alpha from `reward`), so every
    evaluation of a run (demo, periodic, after training) measures the same thing."""
    return {
        "num_samples": cfg.eval.num_samples,
        "temperature": cfg.eval.temperature,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "batch_size": cfg.eval.batch_size,
        "format_weight": cfg.reward.format_weight,
    }


# --------------------------------------------------------------------------- run directory
def run_dir_for(cfg: Config) -> Path:
    """`train.output_dir / train.run_name`, the name defaulting to task, schedule and seed."""
    name = cfg.train.run_name or f"{cfg.task.name}-{cfg.kl.schedule}-seed{cfg.train.seed}"
    return Path(cfg.train.output_dir) / name


RESUMABLE_FIELDS = frozenset(
    "train.report_to train.threads train.output_dir train.log_rollouts train.save_every train.keep_checkpoints "
    "train.max_nonfinite_steps train.eval_every train.eval_prompts eval.batch_size model.gradient_checkpointing "
    "grpo.logprob_chunk".split()
)
"""Fields that change how a run is logged, checkpointed, tracked or fits in memory, not what it trains:
a `--resume` may change them (e.g. add a tracker, or turn on gradient checkpointing after running out
of memory); `config.yaml` is then updated."""


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    """Create the run directory; refuse to mix two configs or to overwrite a run without `--resume`. A run
    that never completed a step (a failed start: a typo, bad data, out of memory at step 0) holds nothing to
    protect, so it starts again under the new config; a refusal names the differing fields."""
    run = run_dir_for(cfg)
    cfg_path = run / "config.yaml"
    if cfg_path.exists():
        diff = _config_differences(run, cfg)
        started = _completed_a_step(run)
        fixed = sorted(k for k in diff if k not in RESUMABLE_FIELDS or not resume)
        if diff and started and fixed:
            more = f" and {len(fixed) - 6} more" if len(fixed) > 6 else ""
            raise UserError(
                f"run directory {str(run)!r} already holds a run with another config (differs in "
                f"{', '.join(fixed[:6])}{more}): {'; '.join(diff[k] for k in fixed[:6])}. A run that "
                "completed steps continues only under its own config (a --resume may change only "
                f"{', '.join(sorted(RESUMABLE_FIELDS))}). Choose another train.run_name or delete that directory"
            )
        if diff:
            why = "it never completed a step" if not started else "--resume"
            print(f"othinklab: {str(cfg_path)!r} updated ({why}): {'; '.join(diff.values())[:600]}", file=sys.stderr)
            atomic_write(cfg_path, to_yaml(cfg))
        if not resume and started:
            raise UserError(
                f"run directory {str(run)!r} already holds this run; pass --resume to continue it, "
                "or choose another train.run_name"
            )
    elif resume:
        raise UserError(f"--resume: run directory {str(run)!r} has no config.yaml to resume from")
    run.mkdir(parents=True, exist_ok=True)
    if not cfg_path.exists():
        atomic_write(cfg_path, to_yaml(cfg))
    return run


def _completed_a_step(run: Path) -> bool:
    """Whether the run logged a step or wrote a checkpoint (a failed start did neither)."""
    metrics = run / "metrics.jsonl"
    logged = metrics.is_file() and metrics.stat().st_size > 0
    return logged or any((run / "checkpoints").glob("step-*"))


def _config_differences(run: Path, cfg: Config) -> dict[str, str]:
    """`section.field` -> "field was X, now Y" for every field where the run's config.yaml differs from
    `cfg`. The file is read as a config (fields a run from an older version lacks take their defaults)."""
    read_run_config(run)  # an empty or damaged config.yaml is a UserError, not a TypeError
    try:
        old = to_dict(load_config(run / "config.yaml"))
    except UserError as exc:
        raise UserError(
            f"run directory {str(run)!r} holds a config.yaml this version cannot read ({exc}); choose another "
            "train.run_name or delete that directory"
        ) from None
    new = to_dict(cfg)
    out = {}
    for section in sorted(old.keys() | new.keys()):
        for name in sorted(old.get(section, {}).keys() | new.get(section, {}).keys()):
            was, now = old.get(section, {}).get(name, "<absent>"), new.get(section, {}).get(name, "<absent>")
            if was != now:
                out[f"{section}.{name}"] = f"{section}.{name} was {str(was)[:60]!r}, now {str(now)[:60]!r}"
    return out


def image_name(sample: Sample) -> str:
    """The file name a sample's prompt image is saved under in the run's `images/` folder."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in sample.id) + ".png"


def save_image(folder: Path, name: str, image: Any) -> None:
    """Write a prompt image once (atomically), so inspectors can show what the model saw."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: image.convert("RGB").save(tmp, format="PNG"))
