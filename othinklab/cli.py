"""`othinklab {demo,train,sft,grid,ablate,eval,estimate,export,build-base}`: a thin shim over the package.

A `UserError` prints one paragraph (no traceback) and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from othinklab import failures
from othinklab.errors import UserError


@contextlib.contextmanager
def _quiet(verbose: bool = False) -> Iterator[None]:
    """Hide third-party warnings and library chatter, noise to a user of the tiny default (--verbose shows it).

    Scoped to the command: othinklab's own warnings still show, and on exit the warning filters and
    transformers' verbosity are restored (a process-wide filter would silence every later caller)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if verbose:
        yield
        return
    bnb = logging.getLogger("bitsandbytes")
    bnb_level = bnb.level
    try:
        from transformers.utils import logging as hf_logging

        hf_level, hf_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - logging tweaks are cosmetic
        hf_logging = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"othinklab(\.|$)")
        bnb.setLevel(logging.ERROR)
        try:
            yield
        finally:
            bnb.setLevel(bnb_level)
            if hf_logging is not None:
                hf_logging.set_verbosity(hf_level)
                (hf_logging.enable_progress_bar if hf_bars else hf_logging.disable_progress_bar)()


def cmd_build_base(args: argparse.Namespace) -> int:
    from othinklab import warmup

    path = warmup.ensure_base(seed=args.seed, force=args.force)
    info = json.loads((path / "othinklab.json").read_text())
    print(
        f"tiny base ready at {path} (built in {info.get('build_seconds', '?')} s, warm-up loss {info.get('final_loss', float('nan')):.3f})"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from othinklab.budget import one_line
    from othinklab.config import load_config
    from othinklab.trainer import train

    cfg = args.cfg = load_config(args.config, args.overrides)
    if os.environ.get("RANK", "0") == "0" and (line := one_line(cfg, int(os.environ.get("WORLD_SIZE", "1")))):
        print(line, flush=True)  # the memory/time model's estimate, before anything is loaded
    try:
        res = train(cfg, resume=args.resume, model_and_processor=_run_as_model(cfg))  # train() holds the run's lock
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"trained {res.steps_done} steps in {res.seconds:.0f} s; run directory: {res.run_dir}")
    return 0


def _run_as_model(cfg: Any) -> tuple[Any, Any] | None:
    """(model, processor) when `model.name` is a run directory (its latest checkpoint folded into its base,
    `export.run_as_model`); None otherwise, and the trainer loads `model.name` itself."""
    import dataclasses

    from othinklab.export import is_run_directory, run_as_model
    from othinklab.models import load_model

    if not is_run_directory(cfg.model.name):
        return None
    return load_model(dataclasses.replace(cfg.model, name=str(run_as_model(cfg.model.name))))


def cmd_sft(args: argparse.Namespace) -> int:
    from othinklab.config import load_config
    from othinklab.sft_run import run_sft

    cfg = args.cfg = load_config(args.config, args.overrides)
    res = run_sft(cfg, model_and_processor=_run_as_model(cfg))  # run_sft() holds the run directory's lock
    print(f"SFT: {res.steps_done} steps in {res.seconds:.0f} s; run directory: {res.run_dir}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from othinklab.ablation_presets import find_preset
    from othinklab.grid import run_grid

    command = " ".join(["othinklab", *sys.argv[1:]])
    out = run_grid(args.preset, output_dir=args.output_dir, command=command, preset=find_preset(args.preset))
    print(f"grid {args.preset}: {out['results']} , {out['claims']} , {out['claims_md']} , {out['same_task']} ,")
    print(f"  {out['cross_task']} , {out['figure']} , {out['provenance']}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from othinklab.ablations import FULL, run_ablations

    names = FULL if args.preset == "all" else (args.preset,)
    print(f"ablations written to {run_ablations(names, output_dir=args.output_dir)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from othinklab.evaluate import evaluate_tasks, format_summary, summary_table
    from othinklab.runs import EVAL_SEED
    from othinklab.tasks import EVAL_SPLITS, make_task

    task, _, split = args.task.partition(":")
    if args.data:
        from othinklab.tasks import load_r1v

        samples = load_r1v(args.data, task, image_root=args.image_root, limit=args.n)
        split = Path(args.data).name
    else:
        split = split or EVAL_SPLITS.get(task, "test")
        samples = make_task(task).samples(args.n, split=split, seed=EVAL_SEED)
    model, processor = _load_for_eval(args.run, args.model)
    ev = {"num_samples": args.samples, "max_new_tokens": args.max_new_tokens, "prompt": args.prompt}
    table = summary_table(evaluate_tasks(model, processor, samples, **ev))  # with pass@k and maj@n
    print(f"{task}:{split}")
    print("\n".join(format_summary(table)))
    return 0


def _load_for_eval(run: str | None, model_name: str) -> tuple[Any, Any]:
    """A run directory's latest checkpoint on top of its base model (`checkpoint.load_run`), or a model by name."""
    from othinklab.checkpoint import load_run
    from othinklab.export import is_run_directory
    from othinklab.models import load_model

    if not run and is_run_directory(model_name):  # a run directory given as the model: the same as --run
        run = model_name
    if not run:
        return load_model(model_name)
    _, model, processor, _ = load_run(run)
    return model, processor


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
    what = "merged model" if args.merge else "adapter" if (Path(out) / "adapter_config.json").exists() else "model"
    pushed = f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""
    print(f"exported the {what}, processor and model card to {out}{pushed}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from othinklab.demo import run_demo

    run_demo(seed=args.seed, steps=args.steps, output_dir=args.output_dir, num_eval=args.num_eval, task=args.task)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from othinklab.budget import DEVICES  # no torch: the parser stays quick to build
    from othinklab.demo import DEMO_TASKS

    p = _Parser(prog="othinklab", description="GRPO with dynamic KL (GRPO-D) for vision-language models.")
    p.add_argument("--verbose", action="store_true", help="show third-party warnings and notices")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the tiny base, train GRPO-D on a task, show before/after")
    d.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), default=0)
    d.add_argument("--task", choices=DEMO_TASKS, default="counting", help="task GRPO-D trains on")
    d.add_argument("--steps", type=_int_at_least(1), default=None, help="optimizer steps (default: the demo's 120)")
    d.add_argument("--num-eval", type=_int_at_least(1), default=None, help="held-out prompts evaluated")
    d.add_argument("--output-dir", type=_out_dir_arg, default="runs")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="GRPO / GRPO-D training from a config")
    t.add_argument("--config", type=_path_arg, default=None, help="YAML file (partial override of the defaults)")
    t.add_argument("--resume", action="store_true", help="continue the run from its latest complete checkpoint")
    t.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. kl.beta=0.01")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sft", help="the supervised baseline on the same data, same run layout")
    s.add_argument("--config", type=_path_arg, default=None, help="YAML file (partial override of the defaults)")
    s.add_argument("overrides", nargs="*", help="section.field=value overrides")
    s.set_defaults(func=cmd_sft)

    g = sub.add_parser("grid", help="the paper's protocol: {base, SFT, GRPO, GRPO-D} x train task x eval task x seeds")
    g.add_argument(
        "--preset",
        default="smoke",
        help="smoke (plumbing, ~1 min), tiny (3 seeds, <= 20 min), powered (5 seeds, ~40 min: the shipped run); "
        "or an ablation preset (ablate-explore, ...: othinklab.ablation_presets.find_preset knows both)",
    )
    g.add_argument("--output-dir", type=_out_dir_arg, default="grid_runs")
    g.set_defaults(func=cmd_grid)

    a = sub.add_parser(
        "ablate", help="KL-schedule and loss-variant ablations with paired claims and the KL mechanism view"
    )
    a.add_argument(
        "--preset",
        default="all",
        help="all (ablate-explore, -beta, -schedule, -loss: about 45 minutes on 2 CPU cores), one of them, or ablate-smoke",
    )
    a.add_argument("--output-dir", type=_out_dir_arg, default="grid_runs")
    a.set_defaults(func=cmd_ablate)

    e = sub.add_parser("eval", help="greedy and sampled accuracy on a task split")
    e.add_argument("--run", type=_path_arg, default=None, help="run directory (uses its latest checkpoint)")
    e.add_argument("--model", type=_path_arg, default="tiny", help="model name or path when --run is not given")
    e.add_argument("--task", default="counting:ood", help="task[:split], e.g. counting:ood, geometry:test")
    e.add_argument("--n", type=_int_at_least(1), default=200, help="prompts evaluated")
    e.add_argument(
        "--data",
        default=None,
        type=_path_arg,
        help="an R1-V test file (e.g. SuperCLEVR-200 or GeoQA JSONL) instead of the synthetic split",
    )
    e.add_argument(
        "--image-root",
        type=_dir_arg,
        default=None,
        help="directory the --data file's image_path entries are relative to",
    )
    e.add_argument("--samples", type=_int_at_least(1), default=4, help="samples per prompt for sampled accuracy")
    e.add_argument("--max-new-tokens", type=_int_at_least(1), default=48, help="longest completion generated")
    e.add_argument(
        "--prompt", default="think", choices=["think", "direct"], help="R1-V's <think> prompt or answer-only"
    )
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("estimate", help="peak memory and step time of a config, before loading anything")
    x.add_argument("--config", default=None, help="YAML file (partial override of the defaults)")
    x.add_argument("--device", default=None, choices=sorted(DEVICES), help="also say whether it fits and how long")
    x.add_argument(
        "--image-size",
        type=_int_at_least(1),
        default=None,
        help="processed image side in pixels (default: from config)",
    )
    x.add_argument("--world-size", type=_int_at_least(1), default=1, help="processes the prompts are split over")
    x.add_argument("overrides", nargs="*", help="section.field=value overrides")
    x.set_defaults(func=cmd_estimate)

    o = sub.add_parser("export", help="a run's latest checkpoint as an adapter or merged model, with a model card")
    o.add_argument("--run", required=True, help="run directory")
    o.add_argument("--out", required=True, type=_out_dir_arg, help="new (or empty) directory to write")
    o.add_argument("--merge", action="store_true", help="fold the LoRA adapter into the base (a plain model)")
    o.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="weights dtype (default: the run's)")
    o.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to this hub model repo")
    o.set_defaults(func=cmd_export)

    b = sub.add_parser("build-base", help="build (or rebuild with --force) the cached tiny base")
    b.add_argument("--seed", type=_int_at_least(0, 2**32 - 1), default=0)
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_build_base)
    for child in sub.choices.values():  # `othinklab train --verbose ...` as well as `othinklab --verbose train ...`
        child.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), so every bad flag reads like any other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {failures.clamp(message, 400)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(low: int, high: int = 2**31 - 1) -> Any:
    """An argparse `type` for integers in [`low`, `high`], naming the value when it is not (a 30-digit seed
    would otherwise reach numpy and torch and end in a traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text[:40])
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text[:40]!r}") from None
        if value < low or value > high or len(text) > 40:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {text[:40]}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _path_arg(text: str) -> str:
    """An argparse `type` for paths and names: no NUL byte, not absurdly long."""
    from othinklab.bounds import path_problem

    problem = path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text[:80]!r}... {problem}")
    return text


def _out_dir_arg(text: str) -> str:
    """An argparse `type` for a directory to create or write into: not a file, not under one, writable,
    every component a legal name (checked before the run starts, not as a traceback once it has)."""
    _path_arg(text)
    path = Path(text).expanduser()
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in path.parts):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}... has a path component over 255 bytes")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is under {str(probe)[:200]!r}, which is a file"
        raise argparse.ArgumentTypeError(f"{text[:200]!r} {where}; choose a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text[:200]!r}: {str(probe)[:200]!r} is not writable")
    return text


def _dir_arg(text: str) -> str:
    """An argparse `type` for an existing directory."""
    _path_arg(text)
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text[:200]!r} is not a directory")
    return text


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a bad flag (exit 2, one line already printed) or --help (exit 0)
        return exc.code if isinstance(exc.code, int) else 2
    received: list[str] = []
    try:
        with _quiet(getattr(args, "verbose", False)), failures.signals_as_interrupts(received):
            return int(args.func(args) or 0)
    except UserError as exc:
        print(f"othinklab {args.command}: error: {failures.clamp(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signame = received[-1] if received else "SIGINT"
        print(f"othinklab {args.command}: {_interrupted(args, signame)}", file=sys.stderr)
        return 143 if signame == "SIGTERM" else 130
    except Exception as exc:  # out of memory / disk full get advice; anything else is a bug (traceback kept)
        cfg = getattr(args, "cfg", None)  # only `train` can --resume: others are not told to
        advice = failures.advice_for(exc, cfg, _run_dir(cfg) if args.command == "train" else None)
        if advice is None:
            raise
        print(f"othinklab {args.command}: error: {advice}", file=sys.stderr)
        return 2


def _run_dir(cfg: Any) -> Path | None:
    if cfg is None:
        return None
    from othinklab.runs import run_dir_for

    return run_dir_for(cfg)


def _interrupted(args: argparse.Namespace, signame: str) -> str:
    """What an interrupt left behind and the command that continues it."""
    from othinklab import checkpoint as ckpt_io

    run = _run_dir(getattr(args, "cfg", None))
    if run is None:
        return f"interrupted by {signame}; completed checkpoints and logs are kept"
    latest = ckpt_io.latest_checkpoint(run / "checkpoints") if run.is_dir() else None
    line = failures.resume_command(args.config, args.overrides) if args.command == "train" else None
    return failures.interrupted_message(run if run.is_dir() else None, latest, line, signame)


if __name__ == "__main__":
    sys.exit(main())
