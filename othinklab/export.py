"""`othinklab export`: a run's latest checkpoint as a shareable model directory, with a model card.

Why: a trained run is only useful outside othinklab as something `transformers` / `peft` load directly.
The export writes either the LoRA adapter (small; load it on the base with peft) or, with `merge`, the
adapter folded into the base weights (`merge_and_unload`) as a plain model that
`AutoModelForImageTextToText.from_pretrained` loads; always the processor, and a `README.md` card that
says what was trained how (base model, method, KL schedule, data, steps, final metrics, eval figures).

The base is loaded in full precision (never 4-bit) so a merge is exact for the weights it is given; an
adapter trained on a 4-bit base therefore merges into the unquantised base (the usual QLoRA practice).
The directory is built next to `out` and renamed into place, so a crash never leaves half an export, and
an existing non-empty `out` is refused rather than overwritten. `push_to_hub` uploads the finished
directory; when the hub is unreachable the local export is kept and the error says so.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from othinklab.errors import UserError

EXPORT_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
"""`--dtype` choices -> ModelConfig dtype names."""


def _load_trained(run_dir: Path, dtype: str | None) -> tuple[Any, Any, Any, Path, str]:
    """(config, model with the latest checkpoint's weights, processor, checkpoint path, dtype) on the CPU."""
    from othinklab import checkpoint as ckpt_io
    from othinklab.config import load_config
    from othinklab.models import load_model

    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--run {str(run_dir)!r}: no config.yaml there; is it a run directory?")
    cfg = load_config(run_dir / "config.yaml")
    latest = ckpt_io.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise UserError(f"--run {str(run_dir)!r} has no complete checkpoint yet; nothing to export")
    dtype = dtype or ("bf16" if cfg.model.dtype == "bfloat16" else "fp32")
    model_cfg = dataclasses.replace(
        cfg.model, load_in_4bit=False, dtype=EXPORT_DTYPES[dtype], gradient_checkpointing=False
    )
    model, processor = load_model(model_cfg, device="cpu")
    ckpt_io.load_weights(model, latest)
    return cfg, model.eval(), processor, latest, dtype


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def model_card(cfg: Any, run_dir: Path, checkpoint: Path, merged: bool, lora: bool, dtype: str) -> str:
    """The README.md of an export: YAML front matter for the hub, then what was trained how and how it did."""
    from othinklab.metrics import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    step = int(checkpoint.name.split("-")[-1]) if checkpoint.name.startswith("step-") else len(rows)
    rows = [r for r in rows if int(r.get("step", -1)) < step]
    final = rows[-1] if rows else {}
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    kl = cfg.kl
    schedule = {
        "grpo_d": f"GRPO-D (Eq. 3): beta lowered to beta_min={kl.beta_min} over the first {kl.explore_frac:.0%} of steps, "
        f"then raised to beta_max={kl.beta_max}",
        "constant": f"constant beta {kl.beta}",
        "none": "no KL term (beta 0)",
        "adaptive": f"adaptive beta from {kl.beta}, target KL {kl.target_kl}",
    }.get(kl.schedule, f"{kl.schedule} from beta {kl.beta_min} to {kl.beta_max}")
    method = "GRPO-D" if kl.schedule == "grpo_d" else "GRPO"
    data = cfg.task.data_path or f"synthetic `{cfg.task.name}` generator (seed {cfg.task.seed})"
    kind = "merged model (LoRA folded into the base)" if merged else ("LoRA adapter (peft)" if lora else "full model")
    library = "peft" if lora and not merged else "transformers"
    lines = [
        "---",
        f"library_name: {library}",
        f"base_model: {cfg.model.name}",
        "pipeline_tag: image-text-to-text",
        "tags: [othinklab, grpo, "
        + ("grpo-d, " if method == "GRPO-D" else "")
        + "reinforcement-learning, vision-language]",
        "---",
        "",
        f"# {run_dir.name} ({method}, {kind})",
        "",
        f"Trained with othinklab: {method} reinforcement learning with a KL weight schedule on a vision-language model.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{cfg.model.name}` |",
        f"| method | {method}, G={cfg.grpo.num_generations} completions per prompt, {cfg.grpo.prompts_per_step} prompts per step |",
        f"| KL schedule | {schedule}; estimator {kl.estimator} |",
        f"| adapters | {'LoRA r=' + str(cfg.model.lora_r) + ', alpha=' + str(cfg.model.lora_alpha) if lora else 'none (full fine-tuning)'}"
        + (" on a 4-bit base" if cfg.model.load_in_4bit else "")
        + " |",
        f"| task and data | {cfg.task.name}: {data} |",
        f"| steps | {step} of {cfg.train.total_steps} (learning rate {cfg.train.learning_rate}, {cfg.train.lr_schedule}) |",
        f"| exported as | {kind}, {dtype} |",
        "",
        "## Final training metrics (last logged step)",
        "",
    ]
    if final:
        lines += ["| metric | value |", "|---|---|"]
        for key in (
            "step",
            "reward/total",
            "reward/accuracy",
            "reward/format",
            "kl/value",
            "kl/beta",
            "completion/length",
        ):
            if key in final:
                lines.append(f"| {key} | {_fmt(final[key])} |")
    else:
        lines.append("No metrics were logged.")
    lines += ["", "## Evaluation during training (held-out prompts)", ""]
    if evals:
        keys = sorted({k for r in evals for k in r if k.startswith("eval/")})
        lines += ["| step | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        for r in evals:
            lines.append(f"| {r['step']} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
    else:
        lines.append("None logged (train.eval_every was 0); run `othinklab eval --run DIR` for figures.")
    lines += ["", "## Use", "", "```python"]
    if merged or not lora:
        lines += [
            "from transformers import AutoModelForImageTextToText, AutoProcessor",
            'model = AutoModelForImageTextToText.from_pretrained("PATH")',
            'processor = AutoProcessor.from_pretrained("PATH")',
        ]
    else:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForImageTextToText, AutoProcessor",
            f'base = AutoModelForImageTextToText.from_pretrained("{cfg.model.name}")',
            'model = PeftModel.from_pretrained(base, "PATH")',
            'processor = AutoProcessor.from_pretrained("PATH")',
        ]
    lines += ["```", ""]
    return "\n".join(lines)


def export_run(
    run: str | Path, out: str | Path, merge: bool = False, dtype: str | None = None, push_to_hub: str | None = None
) -> Path:
    """Write the run's latest checkpoint to `out` (adapter, or merged model with `merge`), processor and card.

    `dtype`: `bf16` or `fp32`; default the run's own (`bf16` for bfloat16 runs, else `fp32`). Returns `out`.
    """
    run_dir, out = Path(run), Path(out)
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise UserError(f"--dtype {dtype!r} is invalid: choose one of {', '.join(EXPORT_DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {str(out)!r} already exists and is not empty; choose a new directory")
    cfg, model, processor, latest, dtype = _load_trained(run_dir, dtype)
    from othinklab.models import is_lora

    lora = is_lora(model)
    if merge and lora:
        model = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        _save_processor(processor, tmp)
        card = model_card(cfg, run_dir, latest, merged=merge and lora, lora=lora, dtype=dtype)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            out.rmdir()  # checked empty above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if push_to_hub:
        push(out, push_to_hub)
    return out


def _save_processor(processor: Any, folder: Path) -> None:
    """The processor, or its tokenizer and image processor where it cannot save itself (no video processor:
    torchvision is absent beside the CPU torch wheel); `othinklab.models` loads either layout."""
    try:
        processor.save_pretrained(folder)
    except Exception:  # noqa: BLE001 - fall back to the parts, as the tiny model's cache does
        processor.tokenizer.save_pretrained(folder)
        processor.image_processor.save_pretrained(folder)


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
