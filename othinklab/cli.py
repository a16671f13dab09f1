"""`othinklab {demo,train,sft,grid,eval,estimate,export,build-base}`: a thin shim over the package.

User errors (bad config, bad data, missing files) print one paragraph and exit with code 2, never a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from othinklab.errors import UserError


def _quiet() -> None:
    """Silence library chatter that says nothing to a user of the tiny default."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*kernels.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="bitsandbytes")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - logging tweaks are cosmetic
        pass


def cmd_build_base(args: argparse.Namespace) -> int:
    from othinklab import warmup

    path = warmup.ensure_base(seed=args.seed, force=args.force)
    info = json.loads((path / "othinklab.json").read_text())
    print(
        f"tiny base ready at {path} (built in {info.get('build_seconds', '?')} s, warm-up loss {info.get('final_loss', float('nan')):.3f})"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from othinklab.config import load_config
    from othinklab.trainer import train

    cfg = load_config(args.config, args.overrides)
    try:
        res = train(cfg, resume=args.resume)
    finally:
        _leave_process_group()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"trained {res.steps_done} steps in {res.seconds:.0f} s; run directory: {res.run_dir}")
    return 0


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_sft(args: argparse.Namespace) -> int:
    from othinklab.config import load_config
    from othinklab.sft_run import run_sft

    cfg = load_config(args.config, args.overrides)
    res = run_sft(cfg)
    print(f"SFT: {res.steps_done} steps in {res.seconds:.0f} s; run directory: {res.run_dir}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from othinklab.grid import run_grid

    out = run_grid(args.preset, output_dir=args.output_dir, command=" ".join(["othinklab", *sys.argv[1:]]))
    print(f"grid {args.preset}: {out['results']} , {out['claims']} , {out['claims_md']} , {out['same_task']} ,")
    print(f"  {out['cross_task']} , {out['figure']} , {out['provenance']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from othinklab.evaluate import evaluate, format_summary
    from othinklab.tasks import EVAL_SPLITS, make_task, with_prompt

    task, _, split = args.task.partition(":")
    if args.data:
        from othinklab.tasks import load_r1v

        samples = load_r1v(args.data, task, image_root=args.image_root, limit=args.n)
        split = Path(args.data).name
    else:
        split = split or EVAL_SPLITS.get(task, "test")
        samples = make_task(task).samples(args.n, split=split, seed=10_000)
    model, processor = _load_for_eval(args.run, args.model)
    samples = with_prompt(samples, args.prompt)
    table = evaluate(model, processor, samples, num_samples=args.samples)
    print(f"{task}:{split}")
    print("\n".join(format_summary(table)))
    return 0


def _load_for_eval(run: str | None, model_name: str) -> tuple[Any, Any]:
    """A run directory's latest checkpoint on top of its base model, or a model by name."""
    from othinklab import checkpoint as ckpt_io
    from othinklab.config import load_config
    from othinklab.models import load_model

    if not run:
        return load_model(model_name)
    run_dir = Path(run)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"--run {run!r}: no config.yaml there; is it a run directory?")
    cfg = load_config(run_dir / "config.yaml")
    latest = ckpt_io.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise UserError(f"--run {run!r} has no complete checkpoint yet")
    model, processor = load_model(cfg.model)
    ckpt_io.load_weights(model, latest)
    return model.eval(), processor


def cmd_estimate(args: argparse.Namespace) -> int:
    from othinklab.budget import DEVICES, describe, estimate
    from othinklab.config import load_config

    cfg = load_config(args.config, args.overrides)
    est = estimate(cfg, image_size=args.image_size, world_size=args.world_size)
    print(f"estimate for {args.config or 'the defaults'} (model {cfg.model.name}); nothing loaded or downloaded")
    print("\n".join(describe(est, DEVICES[args.device] if args.device else None)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from othinklab.export import export_run

    out = export_run(args.run, args.out, merge=args.merge, dtype=args.dtype, push_to_hub=args.push_to_hub)
    what = "merged model" if args.merge else "adapter"
    pushed = f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""
    print(f"exported the {what}, processor and model card to {out}{pushed}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from othinklab.demo import run_demo

    run_demo(seed=args.seed, steps=args.steps, output_dir=args.output_dir, num_eval=args.num_eval)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from othinklab.budget import DEVICES  # no torch: the parser stays quick to build

    p = argparse.ArgumentParser(
        prog="othinklab", description="GRPO with dynamic KL (GRPO-D) for vision-language models."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the tiny base, train GRPO-D on counting, show before/after")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--steps", type=int, default=None, help="optimizer steps (default: configs/demo.yaml's)")
    d.add_argument("--num-eval", type=int, default=None, help="held-out prompts evaluated")
    d.add_argument("--output-dir", default="runs")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="GRPO / GRPO-D training from a config")
    t.add_argument("--config", default=None, help="YAML file (partial override of the defaults)")
    t.add_argument("--resume", action="store_true", help="continue the run from its latest complete checkpoint")
    t.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. kl.beta=0.01")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sft", help="the supervised baseline on the same data, same run layout")
    s.add_argument("--config", default=None, help="YAML file (partial override of the defaults)")
    s.add_argument("overrides", nargs="*", help="section.field=value overrides")
    s.set_defaults(func=cmd_sft)

    g = sub.add_parser("grid", help="the paper's protocol: {base, SFT, GRPO, GRPO-D} x train task x eval task x seeds")
    g.add_argument(
        "--preset",
        default="smoke",
        help="smoke (plumbing, ~1 min), tiny (3 seeds, <= 20 min), powered (6 seeds, ~1 h: the shipped run); "
        "or a preset another module registered in othinklab.grid.PRESETS",
    )
    g.add_argument("--output-dir", default="grid_runs")
    g.set_defaults(func=cmd_grid)

    e = sub.add_parser("eval", help="greedy and sampled accuracy on a task split")
    e.add_argument("--run", default=None, help="run directory (uses its latest checkpoint)")
    e.add_argument("--model", default="tiny", help="model name or path when --run is not given")
    e.add_argument("--task", default="counting:ood", help="task[:split], e.g. counting:ood, geometry:test")
    e.add_argument("--n", type=int, default=200, help="prompts evaluated")
    e.add_argument(
        "--data",
        default=None,
        help="an R1-V test file (e.g. SuperCLEVR-200 or GeoQA JSONL) instead of the synthetic split",
    )
    e.add_argument("--image-root", default=None, help="directory the --data file's image_path entries are relative to")
    e.add_argument("--samples", type=int, default=4, help="samples per prompt for sampled accuracy")
    e.add_argument(
        "--prompt", default="think", choices=["think", "direct"], help="R1-V's <think> prompt or answer-only"
    )
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("estimate", help="peak memory and step time of a config, before loading anything")
    x.add_argument("--config", default=None, help="YAML file (partial override of the defaults)")
    x.add_argument("--device", default=None, choices=sorted(DEVICES), help="also say whether it fits and how long")
    x.add_argument("--image-size", type=int, default=None, help="processed image side in pixels (default: from config)")
    x.add_argument("--world-size", type=int, default=1, help="processes the prompts are split over")
    x.add_argument("overrides", nargs="*", help="section.field=value overrides")
    x.set_defaults(func=cmd_estimate)

    o = sub.add_parser("export", help="a run's latest checkpoint as an adapter or merged model, with a model card")
    o.add_argument("--run", required=True, help="run directory")
    o.add_argument("--out", required=True, help="new (or empty) directory to write")
    o.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base (a plain model)")
    o.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="weights dtype (default: the run's)")
    o.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to this hub model repo")
    o.set_defaults(func=cmd_export)

    b = sub.add_parser("build-base", help="build (or rebuild with --force) the cached tiny base")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_build_base)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"othinklab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"othinklab {args.command}: interrupted; completed checkpoints and logs are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
