"""`othinklab export`: a run's latest checkpoint as a shareable model directory, with a model card.

Why: a trained run is only useful outside othinklab as something `transformers` / `peft` load directly.
The export holds the LoRA adapter (load it on the base with peft) or, with `merge`, a plain model with the
adapter folded in (`merge_and_unload`); always the processor, and a `README.md` card saying what was
trained how. The base loads in full precision, so an adapter trained on a 4-bit base merges into the
unquantised one (the usual QLoRA practice). The directory is built beside `out` and renamed into place
(a crash never leaves half an export); a non-empty `out` is refused, never overwritten. When the hub is
unreachable, `push_to_hub` keeps the local export and the error says so.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from othinklab.bounds import new_dir_mode
from othinklab.errors import UserError

EXPORT_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
"""`--dtype` choices -> ModelConfig dtype names."""


def _load_trained(run_dir: Path, dtype: str | None) -> tuple[Any, Any, Any, Path, str]:
    """(config, model with the latest checkpoint's weights, processor, checkpoint path, dtype) on the CPU."""
    from othinklab.checkpoint import load_run

    chosen: list[str] = []

    def full_precision(cfg: Any) -> Any:
        chosen.append(dtype or ("bf16" if cfg.model.dtype == "bfloat16" else "fp32"))
        return dataclasses.replace(
            cfg.model, load_in_4bit=False, dtype=EXPORT_DTYPES[chosen[0]], gradient_checkpointing=False
        )

    cfg, model, processor, latest = load_run(run_dir, model_config=full_precision, device="cpu")
    return cfg, model, processor, latest, chosen[0]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _step_of(row: Any) -> int | None:
    """A metrics row's step, or None for a row that is not a mapping with an integer step (hand-edited, torn)."""
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def run_method(cfg: Any, checkpoint: Path) -> str:
    """What trained the run: `SFT` (its checkpoint says so), else `GRPO-D` or `GRPO` by the KL schedule."""
    try:
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8")[:1_000_000])
    except (OSError, ValueError):
        state = {}
    if isinstance(state, dict) and state.get("method") == "sft":
        return "SFT"
    return "GRPO-D" if cfg.kl.schedule == "grpo_d" else "GRPO"


def _card_data(cfg: Any, method: str, library: str) -> Any:
    """The hub front matter, built by huggingface_hub (`base_model` only when it is a hub id)."""
    from huggingface_hub import ModelCardData

    name = cfg.model.name
    hub_id = name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/", "~"))
    tags = ["othinklab", method.lower(), "vision-language"]
    tags += ["grpo", "reinforcement-learning"] if method != "SFT" else ["sft"]
    return ModelCardData(
        library_name=library, base_model=name if hub_id else None, pipeline_tag="image-text-to-text", tags=tags
    )


CARD_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"
"""The card: huggingface_hub's front matter, then othinklab's body."""
CARD_METRICS = "step loss/total reward/total reward/accuracy reward/format kl/value kl/beta completion/length".split()
"""The final training metrics the card lists (those the run logged)."""


def model_card(cfg: Any, run_dir: Path, checkpoint: Path, merged: bool, lora: bool, dtype: str) -> str:
    """The README.md of an export: YAML front matter for the hub, then what was trained how and how it did."""
    from huggingface_hub import ModelCard

    from othinklab.metrics import read_jsonl

    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if _step_of(r) is not None]
    step = int(checkpoint.name.split("-")[-1]) if checkpoint.name.startswith("step-") else len(rows)
    rows = [r for r in rows if int(r["step"]) < step]
    final = rows[-1] if rows else {}
    evals = [r for r in rows if any(str(k).startswith("eval/") for k in r)]
    kl = cfg.kl
    method = run_method(cfg, checkpoint)
    schedule = {
        "grpo_d": f"GRPO-D (Eq. 3): beta lowered to beta_min={kl.beta_min} over the first {kl.explore_frac:.0%} of steps, "
        f"then raised to beta_max={kl.beta_max}",
        "constant": f"constant beta {kl.beta}",
        "none": "no KL term (beta 0)",
        "adaptive": f"adaptive beta from {kl.beta}, target KL {kl.target_kl}",
    }.get(kl.schedule, f"{kl.schedule} from beta {kl.beta_min} to {kl.beta_max}")
    data = cfg.task.data_path or f"synthetic `{cfg.task.name}` generator (seed {cfg.task.seed})"
    kind = "merged model (LoRA folded into the base)" if merged else ("LoRA adapter (peft)" if lora else "full model")
    library = "peft" if lora and not merged else "transformers"
    if method == "SFT":
        what = "supervised fine-tuning (SFT) on the task's reasoning and answer"
        how = f"SFT, batch {cfg.sft.batch_size}"
        kl_rows: list[str] = []
        steps = f"| steps | {step} of {cfg.sft.steps} (learning rate {cfg.sft.learning_rate}) |"
    else:
        what = f"{method} reinforcement learning with a KL weight schedule"
        how = f"{method}, G={cfg.grpo.num_generations} completions per prompt, {cfg.grpo.prompts_per_step} prompts per step"
        kl_rows = [f"| KL schedule | {schedule}; estimator {kl.estimator} |"]
        steps = (
            f"| steps | {step} of {cfg.train.total_steps} (learning rate {cfg.train.learning_rate}, "
            f"{cfg.train.lr_schedule}) |"
        )
    lines = [
        f"# {run_dir.name} ({method}, {kind})",
        "",
        f"Trained with othinklab: {what} on a vision-language model.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{cfg.model.name}` |",
        f"| method | {how} |",
        *kl_rows,
        f"| adapters | {'LoRA r=' + str(cfg.model.lora_r) + ', alpha=' + str(cfg.model.lora_alpha) if lora else 'none (full fine-tuning)'}"
        + (" on a 4-bit base" if cfg.model.load_in_4bit else "")
        + " |",
        f"| task and data | {cfg.task.name}: {data} |",
        steps,
        f"| exported as | {kind}, {dtype} |",
        "",
        "## Final training metrics (last logged step)",
        "",
    ]
    if final:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(final[key])} |" for key in CARD_METRICS if key in final]
    else:
        lines.append("No metrics were logged.")
    lines += ["", "## Evaluation during training (held-out prompts)", ""]
    if evals:
        keys = sorted({str(k) for r in evals for k in r if str(k).startswith("eval/")})
        lines += ["| step | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        for r in evals:
            lines.append(f"| {r['step']} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    else:
        lines.append("None logged (train.eval_every was 0); run `othinklab eval --run DIR` for figures.")
    load_proc = 'processor = AutoProcessor.from_pretrained("PATH")  # no torchvision: add trust_remote_code=True'
    auto = "from transformers import AutoModelForImageTextToText, AutoProcessor"
    if merged or not lora:
        use = [auto, 'model = AutoModelForImageTextToText.from_pretrained("PATH")']
    else:
        base = f'base = AutoModelForImageTextToText.from_pretrained("{cfg.model.name}")'
        use = ["from peft import PeftModel", auto, base, 'model = PeftModel.from_pretrained(base, "PATH")']
    lines += ["", "## Use", "", "```python", *use, load_proc]
    lines += [
        "```",
        "",
        "Without torchvision, transformers cannot build Qwen2-VL's video processor; `trust_remote_code=True` loads",
        "the shipped `processing_othinklab.py` instead (the same processor, without video). With torchvision,",
        "the standard `Qwen2VLProcessor` loads.",
        "",
    ]
    card = ModelCard.from_template(_card_data(cfg, method, library), template_str=CARD_TEMPLATE, body="\n".join(lines))
    return str(card)


def export_run(
    run: str | Path, out: str | Path, merge: bool = False, dtype: str | None = None, push_to_hub: str | None = None
) -> Path:
    """Write the run's latest checkpoint to `out` (adapter, or merged model with `merge`), processor and card.

    `dtype`: `bf16` or `fp32`; default the run's own (`bf16` for bfloat16 runs, else `fp32`). Returns `out`.
    """
    run_dir, out = Path(run), Path(out)
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise UserError(f"--dtype {dtype!r} is invalid: choose one of {', '.join(EXPORT_DTYPES)}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; choose a new directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {str(out)!r} already exists and is not empty; choose a new directory")
    mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else new_dir_mode()
    try:  # before the model loads: a bad --out fails in a second
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.", dir=out.parent))
    except OSError as exc:
        raise UserError(
            f"--out {str(out)!r} cannot be created ({exc.strerror or exc}); choose a writable directory"
        ) from None
    try:
        cfg, model, processor, latest, dtype = _load_trained(run_dir, dtype)
        from othinklab.models import is_lora

        lora = is_lora(model)
        if merge and lora:
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
        _save_processor(processor, tmp)
        card = model_card(cfg, run_dir, latest, merged=merge and lora, lora=lora, dtype=dtype)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        tmp.chmod(mode)  # mkdtemp makes 0700: follow the umask, or keep an existing --out's mode
        if out.exists():
            out.rmdir()  # checked empty above
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in (errno.ENAMETOOLONG, errno.EACCES, errno.EROFS, errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise UserError(f"--out {str(out)!r} cannot be written ({exc.strerror}); choose another directory") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if push_to_hub:
        push(out, push_to_hub)
    return out


def run_as_model(run: str | Path) -> Path:
    """A run directory used as `model.name` (the docs allow it): its latest checkpoint merged into its base
    and exported once, as a plain model directory, under `tiny.home()/run-models` (keyed by the run's path
    and checkpoint, so a newer checkpoint makes a new one). Loading it is then any local model's load."""
    import hashlib

    from othinklab.checkpoint import latest_checkpoint
    from othinklab.tiny import home

    run = Path(run).resolve()
    latest = latest_checkpoint(run / "checkpoints")
    if latest is None:
        raise UserError(f"model.name={str(run)!r} is a run directory without a complete checkpoint yet")
    stamp = f"{run}|{latest.name}|{(latest / 'state.json').stat().st_mtime_ns}"
    out = home() / "run-models" / f"{run.name[:80]}-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    if not (out / "config.json").is_file():
        try:
            export_run(run, out, merge=True)
        except UserError:
            if not (out / "config.json").is_file():  # not a concurrent process having just made it
                raise
    return out


def is_run_directory(path: str | Path) -> bool:
    """A run directory (config.yaml and checkpoints/) rather than a model directory (config.json)."""
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "checkpoints").is_dir() and not (p / "config.json").exists()


def _save_processor(processor: Any, folder: Path) -> None:
    """The processor, loadable by plain `AutoProcessor`: a full Qwen2-VL processor saves itself; one without
    a video processor (torchvision absent, the tiny default) is written by `tiny.write_processor`."""
    from othinklab.tiny import write_processor

    if getattr(processor, "video_processor", None) is not None:
        processor.save_pretrained(folder)
    else:
        write_processor(processor, folder)


def push(folder: Path, repo_id: str) -> str:
    """Upload `folder` to the hub model repo `repo_id` (created if missing); a clear `UserError` when unreachable."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model")
    except Exception as exc:  # noqa: BLE001 - offline, no token, no network, no permission: all the user's to fix
        raise UserError(
            f"--push-to-hub {repo_id!r} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"the hub is unreachable or refused the upload (offline mode, network, or token: `hf auth login`). The "
            f"export itself is complete in {str(folder)!r}; push it later with `hf upload {repo_id} {folder}`."
        ) from None
    return str(getattr(info, "commit_url", info))
