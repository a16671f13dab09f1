"""Run configuration: frozen nested dataclasses, YAML partial overrides and `section.field=value` overrides.

Why: every knob is declared with its unit and paper symbol (cleanrl style), and a typo in a YAML file or on
the command line fails at once, naming file, field and value and suggesting the nearest key. Names follow
TRL where TRL has the concept (`num_generations`, `beta`, `epsilon`, `temperature`, `learning_rate`, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from othinklab.bounds import YamlTooComplex, field_problems, load_yaml, read_yaml_file, show
from othinklab.errors import ConfigError
from othinklab.grpo import AGGREGATIONS, SCALES
from othinklab.kl import KL_KINDS, PLACEMENTS, SCHEDULES, param_problems
from othinklab.tasks import PROMPTS, TASKS


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"
    """`tiny` (embedded partly competent base), `tiny-init` (untrained), a hub id such as
    `Qwen/Qwen2-VL-2B-Instruct`, or a local directory (a saved model or run)."""
    dtype: str = "float32"
    """Weights and compute dtype: `float32` (CPU), `bfloat16` (GPU, the paper's), `float16` (GPUs without
    bfloat16, e.g. T4; needs `lora: true`: adapters, their AdamW state, log-probs and loss stay float32 and
    the loss is scaled, see `train.loss_scaling`). 4-bit layers compute in this dtype."""
    load_in_4bit: bool = False
    """Quantise the base weights to 4-bit NF4 with bitsandbytes (QLoRA); needs `lora: true`."""
    lora: bool = True
    """Train LoRA adapters (peft) instead of all weights; the reference is the adapter-disabled model."""
    lora_r: int = 16
    """LoRA rank. Raise for more capacity, lower to save memory."""
    lora_alpha: int = 32
    """LoRA scaling numerator (effective scale = lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path; 0 keeps rollouts and training passes identical."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Module names (language model only) that get adapters: attention and MLP projections."""
    lora_include_vision: bool = False
    """Also put adapters on the vision tower's linear layers (off: the paper-scale default)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more time."""
    max_pixels: int = 401408
    """Largest image area the processor keeps for real checkpoints (pixels; R1-V's value)."""


@dataclass(frozen=True)
class TaskConfig:
    name: str = "counting"
    """Training task: `counting` or `geometry`."""
    data_path: str = ""
    """Empty: the seeded synthetic generator. Otherwise an R1-V dataset: save_to_disk dir, parquet, JSONL, or a
    hub id `owner/name[:config][@split]` (e.g. leonardPKU/clevr_cogen_a_train; HF cache and offline mode apply)."""
    image_root: str = ""
    """Directory that relative `image_path` entries of a JSONL dataset are resolved against."""
    num_train: int = 0
    """Size of the training pool (the paper's few-shot 100 for counting); 0 = fresh samples every step."""
    eval_split: str = ""
    """Split that `othinklab eval`, the demo, the grid and `train.eval_every` score; empty = the paper's (counting `ood`, geometry `test`)."""
    eval_data_path: str = ""
    """R1-V test file (SuperCLEVR-200, GeoQA test) or hub id (as `data_path`) used instead of the synthetic eval split."""
    num_eval: int = 200
    """Number of held-out prompts evaluated (the paper's SuperCLEVR-200 has 200)."""
    seed: int = 0
    """Seed of the synthetic data stream and of few-shot selection."""
    prompt: str = "think"
    """Instruction after each question, in training and evaluation: `think` (R1-V's, the paper's: reason in
    `<think>`, answer in `<answer>`) or `direct` (the answer alone in `<answer>`). `direct` needs
    `reward.format_weight=0`: the format reward checks for the `<think>` block it asks the model to omit."""


@dataclass(frozen=True)
class GRPOConfig:
    num_generations: int = 8
    """G: completions sampled per prompt (group size). At least 2: advantages compare within a group."""
    prompts_per_step: int = 8
    """Prompts per generation batch (each yields G completions)."""
    epsilon: float = 0.2
    """eps of Eq. 4's ratio clipping (the lower bound 1 - eps); inert while `num_iterations` is 1 (ratio = 1)."""
    epsilon_high: float = 0.0
    """Upper clip bound 1 + epsilon_high (DAPO's clip-higher, e.g. 0.28); 0 = same as `epsilon` (the
    paper's symmetric clip). Inert while `num_iterations` is 1, like all clipping."""
    num_iterations: int = 1
    """Policy updates per generation batch (TRL's name); above 1, ratio and clipping become active."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (R1-V: 1.0)."""
    top_k: int = 0
    """Top-k filter when sampling; 0 = off (sample from the full distribution)."""
    top_p: float = 1.0
    """Nucleus filter when sampling; 1.0 = off."""
    max_completion_length: int = 48
    """Longest completion, in tokens; longer ones are truncated (and logged as such)."""
    aggregation: str = "sequence"
    """`sequence`: Eq. 4's per-completion token mean, then mean; `token`: sum over tokens / token count
    (DAPO; one global count over processes and accumulation steps); `dr_grpo`: sum over tokens /
    (completions x max_completion_length) (Dr. GRPO, no length normalisation)."""
    scale_rewards: str = "group"
    """Advantage scaling: `group` divides by each group's reward std (the paper's Eq. 2); `batch` by the
    std of the whole generation batch; `none` only subtracts the group mean (Dr. GRPO)."""
    mask_truncated_completions: bool = False
    """Give completions that hit max_completion_length without a stop token zero loss weight (DAPO)."""
    logprob_chunk: int = 8
    """Rows per chunk when turning logits into log-probs (bounds float32 full-vocab memory)."""


@dataclass(frozen=True)
class KLConfig:
    schedule: str = "grpo_d"
    """beta(s): `none` (beta = 0; the KL is still logged when a reference exists), `constant`, `linear`,
    `cosine`, `grpo_d` (Eq. 3), `adaptive` (target KL) or `accuracy` (beta_min..beta_max with the EMA of the
    training accuracy: explore while wrong, exploit while right)."""
    beta: float = 0.04
    """Constant beta (schedule `constant`), or the starting beta of `adaptive`. TRL's historic default."""
    beta_min: float = 0.04
    """beta_min of Eq. 3 (counting 0.04, geometry 0.0); also `linear`/`cosine`'s start unless `beta_start` is set."""
    beta_max: float = 0.1
    """beta_max of Eq. 3 (counting 0.1, geometry 0.02); also `linear`/`cosine`'s end unless `beta_end` is set."""
    beta_start: float = -1.0
    """beta at step 0 of `linear`/`cosine` (e.g. 0.1 for a decaying "cosine 0.1 -> 0.0"); negative = `beta_min`."""
    beta_end: float = -1.0
    """beta at the last step of `linear`/`cosine`; negative = `beta_max`."""
    explore_frac: float = 0.3
    """w/t of Eq. 3: fraction of steps spent lowering beta before raising it (paper: 0.3)."""
    estimator: str = "k3"
    """Per-token KL estimator: `k3` (Eq. 5, the paper's; as a loss its gradient follows the forward KL),
    `k1`, `k2`, `k3_plus` (k3's value, k2's gradient: verl's `k3+`) or `k3_is` (k3 times pi/pi_old: TRL's
    `use_bias_correction_kl`). docs/paper.md tables which KL each one's gradient follows."""
    placement: str = "loss"
    """Where the KL enters: `loss` (Eq. 4, beta * estimator in the loss) or `reward` (beta times each
    completion's summed k1, detached, is subtracted from its reward before the group advantage; the loss
    then has no KL term and `kl.estimator` only sets what `kl/value` logs)."""
    accuracy_momentum: float = 0.9
    """EMA momentum of the `accuracy` schedule's training accuracy (0 = this step's accuracy alone)."""
    reset_reference_every: int = 0
    """Every N optimizer steps the reference becomes the current policy (0 = never: the initial model)."""
    target_kl: float = 0.05
    """Target per-token KL of the `adaptive` schedule."""
    horizon: float = 100.0
    """Responsiveness of `adaptive` (steps); smaller reacts faster."""


@dataclass(frozen=True)
class RewardConfig:
    format_weight: float = 1.0
    """alpha of Eq. 1: R = R_acc + alpha * R_format (paper: 1)."""
    accuracy_function: str = ""
    """R_acc: empty = R1-V's (string, numeric, then symbolic match); or a name (`accuracy`), `package.module:function`
    or `file.py:function`, called as f(completion, solution) -> float. A call that raises or returns a non-number
    scores that completion 0 and is counted and logged. The module or file runs as your own Python code, with your
    permissions: name only code you trust (a shared config.yaml that names one runs it too)."""
    timeout_s: float = 30.0
    """Deadline of one call to a custom `accuracy_function` (seconds): a late call scores 0 and is logged, and
    8 in a row stop training with an error (so a function that never returns cannot hang the run)."""


@dataclass(frozen=True)
class TrainConfig:
    total_steps: int = 100
    """t: optimizer steps in the run; the GRPO-D schedule spans exactly these."""
    learning_rate: float = 1e-4
    """AdamW peak learning rate (R1-V full fine-tuning: 1e-6; LoRA on the tiny model: ~1e-4..3e-4)."""
    lr_schedule: str = "constant"
    """`constant`, `linear` (decay to 0) or `cosine`, after `warmup_steps`."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 = off."""
    gradient_accumulation_steps: int = 1
    """Generation batches whose gradients are summed per optimizer step."""
    seed: int = 0
    """Seed of sampling, dropout and data order."""
    run_name: str = ""
    """Run directory name under `output_dir`; empty = derived from task, schedule and seed."""
    output_dir: str = "runs"
    """Parent directory of run directories."""
    save_every: int = 50
    """Checkpoint every this many optimizer steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept on disk (oldest removed only after a newer one is complete)."""
    loss_scaling: bool = True
    """Dynamic loss scaling (`torch.amp.GradScaler`) under `model.dtype: float16`, so small gradients do not
    underflow to 0 in half precision; an overflowing step is skipped and the scale halved. No effect otherwise."""
    max_nonfinite_steps: int = 3
    """Steps in a row whose loss or gradient is NaN/inf that are skipped (no update) before training stops."""
    log_rollouts: bool = True
    """Append every sampled completion to `rollouts.jsonl`."""
    threads: int = 0
    """torch CPU threads; 0 = torch's default."""
    report_to: tuple[str, ...] = ()
    """Trackers that also get every metrics row: any of `tensorboard`, `trackio`, `wandb`, `mlflow` (TRL's
    `report_to`; empty or `none` = none). `metrics.jsonl` stays the source of truth; see othinklab.trackers."""
    eval_every: int = 0
    """Evaluate greedy and sampled accuracy on `eval_prompts` held-out prompts every this many optimizer
    steps (and after the last), logged as `eval/...` keys of that step's metrics row; 0 = off."""
    eval_prompts: int = 32
    """Held-out prompts evaluated during training (the first ones of the eval split; at most task.num_eval)."""


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 48
    """Longest evaluated completion, in tokens."""
    batch_size: int = 32
    """Completions per sampling call: this many prompts for greedy accuracy, batch_size / num_samples prompts
    for sampled accuracy (a memory knob; sampled draws change with it, greedy ones do not)."""
    num_samples: int = 4
    """k: sampled completions per prompt for sampled accuracy (next to greedy accuracy)."""
    temperature: float = 1.0
    """Temperature for sampled accuracy (the training temperature)."""


@dataclass(frozen=True)
class SFTConfig:
    batch_size: int = 32
    """Examples per optimizer step."""
    learning_rate: float = 5e-4
    """AdamW learning rate of supervised steps."""
    steps: int = 300
    """Optimizer steps."""


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Which network, in which precision, with which adapters."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Which data to train and evaluate on."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Rollout and loss settings."""
    kl: KLConfig = field(default_factory=KLConfig)
    """The KL weight schedule and estimator (the paper's contribution)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward weights."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, logging and checkpointing."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out evaluation: `othinklab eval`, the demo (before and after its run), the grid, `train.eval_every`."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The supervised baseline."""


DTYPES = ("float32", "bfloat16", "float16")
"""Weight dtypes by name (`models.DTYPES` maps each to its torch dtype)."""
LR_SCHEDULES = ("constant", "linear", "cosine")
"""Learning-rate schedules after warm-up (`trainer.lr_lambda`)."""
CHOICES: dict[str, tuple[str, ...]] = {
    "model.dtype": DTYPES,
    "task.name": tuple(TASKS),
    "task.prompt": tuple(PROMPTS),
    "grpo.aggregation": AGGREGATIONS,
    "grpo.scale_rewards": SCALES,
    "kl.schedule": SCHEDULES,
    "kl.estimator": KL_KINDS,
    "kl.placement": PLACEMENTS,
    "train.lr_schedule": LR_SCHEDULES,
}
"""Fields restricted to a fixed set of values, read from the registries that implement them."""
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")
"""Experiment trackers `train.report_to` may name (each an optional extra: `pip install othinklab[NAME]`)."""
MAX_SEED = 2**32 - 1
"""Largest seed (numpy's and torch's generators take 32-bit seeds everywhere this one travels)."""
MIN_PIXELS = 28 * 28
"""Smallest `model.max_pixels`: one merged 28x28 Qwen2-VL patch."""
MAX_THREADS = 1024
"""Most torch CPU threads `train.threads` may ask for."""
MAX_GROUP = 4096
"""Most completions per prompt, and prompts per step (a batch beyond this is a typo, not a plan)."""
AT_LEAST = {
    **dict.fromkeys(
        "grpo.top_k task.num_train train.warmup_steps train.save_every train.max_nonfinite_steps".split(), 0
    ),
    **dict.fromkeys(
        "grpo.prompts_per_step grpo.num_iterations grpo.max_completion_length grpo.logprob_chunk train.total_steps "
        "train.gradient_accumulation_steps train.keep_checkpoints train.eval_prompts task.num_eval eval.num_samples "
        "eval.max_new_tokens eval.batch_size model.lora_r model.lora_alpha sft.steps sft.batch_size".split(),
        1,
    ),
}
"""Integer fields and their least valid value (0: counts where none is meaningful; 1: sizes and steps)."""
NULL_REFUSED = ("train.run_name", "train.output_dir", "model.name")
"""String fields where YAML `null` is a mistake, not "empty": `run_name: null` once wrote into the default run."""


def _validate(cfg: Config, where: str) -> None:
    """Range checks that the types alone cannot express; each error names the field and value."""

    def bad(key: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{where}: {key}={show(value)} is invalid: {why}")

    def get(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name)

    for key, value, why in field_problems(cfg):
        raise bad(key, value, why)
    for key, options in CHOICES.items():
        if get(key) not in options:
            raise bad(key, get(key), f"choose one of {', '.join(options)}")
    # Schedule parameters are range-checked where the schedules live (negative linear/cosine endpoints
    # mean "use beta_min/beta_max", so those are checked as resolved).
    kl_params = {k: v for k, v in dataclasses.asdict(cfg.kl).items() if k not in ("beta_start", "beta_end")}
    for name, value, why in param_problems(kl_params):
        raise bad(f"kl.{name}", value, why)
    checks = [
        *((key, get(key) >= low, "must be at least 1" if low else "must be >= 0") for key, low in AT_LEAST.items()),
        ("grpo.num_generations", cfg.grpo.num_generations >= 2, "G must be at least 2"),
        ("grpo.epsilon", 0 < cfg.grpo.epsilon < 1, "must be in (0, 1)"),
        ("grpo.epsilon_high", cfg.grpo.epsilon_high >= 0, "must be >= 0 (0 = same as grpo.epsilon)"),
        ("grpo.temperature", cfg.grpo.temperature > 0, "must be > 0"),
        ("grpo.top_p", 0 < cfg.grpo.top_p <= 1, "must be in (0, 1]"),
        ("reward.format_weight", cfg.reward.format_weight >= 0, "alpha must be >= 0"),
        (
            "reward.format_weight",
            cfg.task.prompt != "direct" or cfg.reward.format_weight == 0,
            "task.prompt=direct asks for no <think> block, which the format reward would punish; set it to 0",
        ),
        ("train.learning_rate", cfg.train.learning_rate > 0, "must be > 0"),
        ("train.max_grad_norm", cfg.train.max_grad_norm >= 0, "must be >= 0 (0 = off)"),
        ("train.report_to", set(cfg.train.report_to) <= set(TRACKERS) | {"none"}, f"choose from {', '.join(TRACKERS)}"),
        ("train.eval_every", cfg.train.eval_every >= 0, "must be >= 0 (0 = off)"),
        ("model.load_in_4bit", not (cfg.model.load_in_4bit and not cfg.model.lora), "4-bit weights need lora: true"),
        (
            "model.dtype",
            not (cfg.model.dtype == "float16" and not cfg.model.lora),
            "float16 full fine-tuning would keep weights, gradients and AdamW moments in float16 (updates round "
            "to 0, moments overflow); use lora: true (adapters stay float32), or bfloat16/float32",
        ),
        ("sft.learning_rate", cfg.sft.learning_rate > 0, "must be > 0"),
        ("reward.timeout_s", cfg.reward.timeout_s > 0, "must be > 0 (seconds per reward call)"),
        ("eval.temperature", cfg.eval.temperature > 0, "must be > 0 (sampled accuracy needs a temperature)"),
        ("model.lora_dropout", 0 <= cfg.model.lora_dropout < 1, "must be in [0, 1)"),
        ("model.max_pixels", MIN_PIXELS <= cfg.model.max_pixels, f"must be at least {MIN_PIXELS} (one 28x28 patch)"),
        ("train.threads", 0 <= cfg.train.threads <= MAX_THREADS, f"must be in [0, {MAX_THREADS}] (0 = default)"),
        ("grpo.num_generations", cfg.grpo.num_generations <= MAX_GROUP, f"G must be at most {MAX_GROUP}"),
        ("grpo.prompts_per_step", cfg.grpo.prompts_per_step <= MAX_GROUP, f"must be at most {MAX_GROUP}"),
        ("task.seed", 0 <= cfg.task.seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
        ("train.seed", 0 <= cfg.train.seed <= MAX_SEED, f"must be in [0, {MAX_SEED}]"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise bad(key, get(key), why)


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Convert a YAML or command-line value to the field's declared type, or fail naming it."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or any(isinstance(v, list | dict | tuple) for v in value):
            raise ConfigError(f"{where}: {key}={show(value)} must be a list of names")
        return tuple(str(v) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: {key}={show(value)} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value)
        raise ConfigError(f"{where}: {key}={show(value)} must be an integer")
    if tp is float:
        if not isinstance(value, bool):
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                return float(value)
        raise ConfigError(f"{where}: {key}={show(value)} must be a number")
    if tp is str:
        if value is None and key in NULL_REFUSED:
            raise ConfigError(f"{where}: {key}=null is invalid: give a value (or leave the field out for the default)")
        if value is None:
            return ""
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: {key}={show(value)} must be a string")
        return str(value)
    raise ConfigError(f"{where}: {key} has an unsupported type {tp!r}")  # pragma: no cover


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(options)}"


def _apply(cfg: Config, updates: dict[str, Any], where: str) -> Config:
    """Return `cfg` with a nested `{section: {field: value}}` dict applied, strictly."""
    sections = {f.name: f for f in dataclasses.fields(Config)}
    if not isinstance(updates, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, got {type(updates).__name__}")
    changes = {}
    for section, values in updates.items():
        if section not in sections:
            raise ConfigError(f"{where}: unknown section {show(section)}{_suggest(str(section)[:100], list(sections))}")
        current = getattr(cfg, section)
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of fields, got {show(values)}")
        hints = typing.get_type_hints(type(current))
        names = [f.name for f in dataclasses.fields(current)]
        new = {}
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in names:
                raise ConfigError(f"{where}: unknown field {show(key)}{_suggest(str(name)[:100], names)}")
            new[name] = _coerce(value, hints[name], key, where)
        changes[section] = dataclasses.replace(current, **new)
    return dataclasses.replace(cfg, **changes)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`["kl.beta=0.01", "train.total_steps=20"]` -> nested dict; values parsed as YAML scalars."""
    nested: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {show(item)} must look like section.field=value (e.g. kl.beta=0.01)")
        key, raw = item.split("=", 1)
        section, name = key.strip().split(".", 1)
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except YamlTooComplex as exc:
            raise ConfigError(f"override {show(item)}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path` (a partial override), then `section.field=value` items."""
    cfg, where = Config(), "config"
    if path is not None:
        data = read_yaml_file(Path(path))
        where = f"config file {show(str(Path(path)))}"
        cfg = _apply(cfg, data, where)
    if overrides:
        cfg = _apply(cfg, parse_overrides(overrides), "command-line override")
        where = f"{where} with overrides"
    _validate(cfg, where)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (tuples become lists), ready for YAML or JSON."""
    plain = dataclasses.asdict(cfg)
    return {k: {n: list(x) if isinstance(x, tuple) else x for n, x in sec.items()} for k, sec in plain.items()}


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (written to each run directory)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
