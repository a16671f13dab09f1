"""Memory and time of a GRPO step, estimated from the config before anything is loaded.

Why: "will this fit on a 16 GB GPU, and how long will 200 steps take?" deserves an answer before a model is
downloaded or a run dies of out-of-memory at step 1. The model counts what the trainer holds, phase by phase
(sampling, reference pass, policy forward+backward):

- weights: 4-bit NF4 text projections (0.516 bytes/parameter with double quantisation); everything else
  (embeddings, norms, vision tower) in `model.dtype` (othinklab does not let peft upcast it to float32);
  a second copy for the reference only under full fine-tuning;
- trainable state: LoRA A/B in float32 (peft keeps adapters float32) with gradient and two AdamW moments
  (16 bytes/parameter), or, under full fine-tuning, gradient and moments in the weights' dtype;
- activations: a decoder layer's tensors kept for the backward pass, per token (the residual stream is
  float32 under 4-bit, for the same reason), all layers or, under gradient checkpointing, each layer's
  input plus one layer recomputed; the KV cache of G completions; chunked full-vocabulary float32 logits.

On CPU what matters is the peak RSS: `cpu_rss_gib` adds what allocated bytes miss (the Python/torch/
transformers runtime, a model load's transient copy of the largest shard, allocator slack), calibrated on
`make real-check`'s three architectures.

Simplified: attention is assumed memory-efficient (no sequence x sequence scores), fragmentation and the
CUDA context are one allowance (`overhead_gib`), and step time is a roofline (FLOPs / (peak x efficiency),
and a decode step's bytes read / bandwidth) with assumed efficiencies, which `make gpu-check` measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from othinklab.architecture import Architecture, load_architecture
from othinklab.config import Config
from othinklab.errors import UserError

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Bytes per 4-bit parameter: the code, an 8-bit absmax per 64-block, a float32 scale per 256 absmaxes."""
PROMPT_TEXT_TOKENS = 64
"""Assumed text tokens of a prompt (chat template + R1-V question + format instruction), images aside."""


@dataclass(frozen=True)
class Device:
    """What bounds a step's speed on one accelerator."""

    name: str
    half_flops: float
    """Dense float16/bfloat16 matmul peak (FLOP/s)."""
    fp32_flops: float
    """Dense float32 matmul peak (FLOP/s)."""
    bandwidth: float
    """Memory bandwidth (bytes/s)."""
    memory_gib: float
    """Memory a process can use (GiB)."""
    bf16: bool = True
    """Whether bfloat16 is supported natively."""


DEVICES = {
    "t4": Device("T4 (16 GB)", 65e12, 8.1e12, 320e9, 14.7, bf16=False),
    "l4": Device("L4 (24 GB)", 121e12, 30e12, 300e9, 22.0),
    "a10g": Device("A10G (24 GB)", 125e12, 31e12, 600e9, 22.0),
    "a100-40gb": Device("A100 40 GB", 312e12, 19.5e12, 1555e9, 39.0),
    "a100-80gb": Device("A100 80 GB", 312e12, 19.5e12, 2039e9, 79.0),
    "h100": Device("H100 SXM 80 GB", 989e12, 67e12, 3350e9, 79.0),
    "h200": Device("H200 141 GB", 989e12, 67e12, 4800e9, 139.0),
}
"""Vendor peak numbers (dense, no sparsity); a benchmark's measured matmul peak can replace them."""
EFFICIENCY = {"matmul": 0.45, "decode_overhead_s_per_layer": 4e-4}
"""Assumed fraction of the matmul peak reached by batched forward/backward passes, and per-layer kernel
launch overhead of one decode step (seconds); both to be corrected from `make gpu-check`'s measurements."""


@dataclass(frozen=True)
class Workload:
    """One generation batch on one process: the sizes that drive memory and FLOPs."""

    prompts: int
    """Prompts in the batch (each with its image)."""
    group_size: int
    """G: completions per prompt."""
    completion_tokens: int
    """Completion length T (the longest; every row is padded to it)."""
    image_size: int
    """Side of the (square) image after the processor, in pixels."""
    prompt_text_tokens: int = PROMPT_TEXT_TOKENS
    """Prompt tokens besides the image's."""
    logprob_chunk: int = 8
    """Rows of full-vocabulary logits at a time (`grpo.logprob_chunk`)."""

    @property
    def rows(self) -> int:
        return self.prompts * self.group_size

    def image_patches(self, arch: Architecture) -> int:
        """Vision-tower tokens per image (patches of `patch_size`^2, the side a multiple of patch x merge)."""
        unit = arch.patch_size * arch.merge_size
        side = max(unit, round(self.image_size / unit) * unit)
        return (side // arch.patch_size) ** 2

    def image_tokens(self, arch: Architecture) -> int:
        """Language-model tokens per image (patches merged `merge_size`^2 to one)."""
        return self.image_patches(arch) // arch.merge_size**2

    def prompt_tokens(self, arch: Architecture) -> int:
        return self.prompt_text_tokens + self.image_tokens(arch)


@dataclass(frozen=True)
class Holding:
    """How the model is held: precision, 4-bit, adapters, checkpointing."""

    dtype: str = "float32"
    load_in_4bit: bool = False
    lora: bool = True
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_include_vision: bool = False
    gradient_checkpointing: bool = False
    reference_copy: bool = False
    """A frozen second copy of the weights (full fine-tuning with a KL term)."""

    @property
    def act_bytes(self) -> int:
        """Bytes per activation element: the compute dtype (4-bit's non-quantised weights stay in it)."""
        return DTYPE_BYTES[self.dtype]

    @property
    def vision_backward(self) -> bool:
        """Whether the frozen vision tower runs a backward under checkpointing: peft's input-gradient hook
        (full-precision LoRA) reaches its patch embedding; the 4-bit path has no hook (non-reentrant)."""
        return self.gradient_checkpointing and not self.load_in_4bit


@dataclass
class Estimate:
    """Estimated bytes per component and phase, FLOPs per phase, and the inputs they came from."""

    arch: Architecture
    work: Workload
    hold: Holding
    memory: dict[str, float] = field(default_factory=dict)
    """Resident bytes: `weights`, `trainable` (parameters, gradients, AdamW moments)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Transient bytes on top of the resident ones: `sampling`, `reference`, `policy`."""
    flops: dict[str, float] = field(default_factory=dict)
    """FLOPs per phase for one generation batch."""

    @property
    def peak_bytes(self) -> float:
        """Largest allocated bytes during a step (what `torch.cuda.max_memory_allocated` reports)."""
        return self.memory["weights"] + self.memory["trainable"] + max(self.phases.values())

    def peak_gib(self, overhead_gib: float = 0.0) -> float:
        return self.peak_bytes / GIB + overhead_gib

    def step_seconds(self, device: Device, efficiency: float = EFFICIENCY["matmul"]) -> dict[str, float]:
        """Roofline time per phase on `device` (seconds for one generation batch)."""
        half = self.hold.dtype != "float32" and (self.hold.dtype != "bfloat16" or device.bf16)
        peak = (device.half_flops if half else device.fp32_flops) * efficiency
        a, w, T = self.arch, self.work, self.work.completion_tokens
        cb = eb = DTYPE_BYTES[self.hold.dtype]
        # A decode step reads every text weight (4-bit ones dequantised: read 4-bit, write and read half).
        read = a.text_linear_params * (NF4_BYTES + 2 * cb if self.hold.load_in_4bit else cb)
        read += a.vocab_size * a.hidden_size * eb
        kv = w.rows * (w.prompt_tokens(a) + T / 2) * a.num_layers * 2 * a.num_kv_heads * a.head_dim * cb
        per_token = max(self.flops["decode"] / T / peak, (read + kv) / device.bandwidth)
        decode = T * (per_token + EFFICIENCY["decode_overhead_s_per_layer"] * a.num_layers)
        return {
            "sampling": (self.flops["sampling"] - self.flops["decode"]) / peak + decode,
            "reference": self.flops["reference"] / peak,
            "policy": self.flops["policy"] / peak,
        }


def holding_from_config(cfg: Config) -> Holding:
    from othinklab.kl import needs_reference, schedule_from_config

    m = cfg.model
    ref = not m.lora and needs_reference(schedule_from_config(cfg.kl, cfg.train.total_steps))
    return Holding(
        m.dtype, m.load_in_4bit, m.lora, m.lora_r, tuple(m.lora_target_modules), m.lora_include_vision,
        m.gradient_checkpointing, ref,
    )  # fmt: skip


def default_image_size(cfg: Config) -> int:
    """The processed image side: the synthetic task's image (capped by `model.max_pixels`), or, for
    dataset files whose images are not read here, the largest `model.max_pixels` allows (an upper bound)."""
    cap = int(math.sqrt(cfg.model.max_pixels))
    if cfg.task.data_path:
        return cap
    from othinklab.tasks import make_task

    return min(int(getattr(make_task(cfg.task.name), "image_size", cap)), cap)


def workload_from_config(
    cfg: Config, image_size: int | None = None, prompt_text_tokens: int = PROMPT_TEXT_TOKENS, world_size: int = 1
) -> Workload:
    """The per-process generation batch a config asks for (prompts split over `world_size` processes)."""
    return Workload(
        prompts=max(1, math.ceil(cfg.grpo.prompts_per_step / world_size)),
        group_size=cfg.grpo.num_generations,
        completion_tokens=cfg.grpo.max_completion_length,
        image_size=image_size or default_image_size(cfg),
        prompt_text_tokens=prompt_text_tokens,
        logprob_chunk=cfg.grpo.logprob_chunk,
    )


# --------------------------------------------------------------------------- memory
def weight_bytes(arch: Architecture, hold: Holding) -> float:
    db = DTYPE_BYTES[hold.dtype]
    if hold.load_in_4bit:
        w = arch.text_linear_params * NF4_BYTES + (arch.text_other_params + arch.vision_params) * db
    else:
        w = arch.parameters * db
    return w * (2 if hold.reference_copy else 1)


def trainable_bytes(arch: Architecture, hold: Holding) -> float:
    if hold.lora:
        return 16 * arch.lora_params(hold.lora_r, hold.lora_targets, hold.lora_include_vision)
    return 3 * arch.parameters * DTYPE_BYTES[hold.dtype]


def layer_saved_bytes(arch: Architecture, hold: Holding) -> float:
    """Bytes one decoder layer keeps per token for the backward pass (attention keys/values excluded)."""
    h, i, kvd, ab = arch.hidden_size, arch.intermediate_size, arch.num_kv_heads * arch.head_dim, hold.act_bytes
    q = arch.num_heads * arch.head_dim
    n = 4 * h * 4  # two RMSNorms: float32 input and normalised output each
    n += (h + q + 2 * kvd + q) * ab  # attention input, q, k, v, attention output (o_proj's input)
    n += (h + 3 * i) * ab  # MLP input, gate, up, act(gate)*up (down's input)
    if hold.load_in_4bit:  # bitsandbytes keeps each projection's input cast to the compute dtype
        n += (3 * h + q + 2 * h + i) * DTYPE_BYTES[hold.dtype]
    if hold.lora and ab != 4:  # peft casts each adapter's input to float32
        n += (3 * h + q + 2 * h + i) * 4
    return n


def _kv_bytes(arch: Architecture, hold: Holding, heads: int) -> float:
    """Keys and values of one token in one layer."""
    return 2 * heads * arch.head_dim * hold.act_bytes


def _vision_bytes(arch: Architecture, hold: Holding, images: int, patches: int) -> float:
    """The vision tower's working set over a batch of images (one block at a time, no gradients)."""
    return images * patches * (6 * arch.vision_dim + arch.vision_mlp_dim) * DTYPE_BYTES[hold.dtype]


def _head_bytes(arch: Architecture, rows: int, tokens: int) -> float:
    """Full-vocabulary float32 logits of `rows` x `tokens` and one same-sized temporary."""
    return 2 * rows * tokens * arch.vocab_size * 4


def phase_bytes(arch: Architecture, work: Workload, hold: Holding) -> dict[str, float]:
    """Transient bytes of each phase, on top of weights and trainable state."""
    a, w, ab = arch, work, hold.act_bytes
    P, T, L, h, i = w.prompt_tokens(a), w.completion_tokens, a.num_layers, a.hidden_size, a.intermediate_size
    kvd = _kv_bytes(a, hold, a.num_kv_heads)
    layer_ws = (4 * h + 3 * i) * ab  # a layer's live intermediates per token, no gradients
    vision = _vision_bytes(a, hold, w.prompts, w.image_patches(a))
    # Sampling: prefill once per prompt, cache repeated G times and grown by T (old and new briefly both live).
    sampling = max(
        vision + w.prompts * P * (L * kvd + layer_ws),
        w.rows * (2 * P + T) * L * kvd + w.rows * (a.vocab_size * 4 * 3 + layer_ws),
    )
    # Reference: the same prompt/cache, completions in one pass, chunked head.
    chunk = min(w.logprob_chunk, w.rows)
    reference = max(
        vision + w.prompts * P * (L * kvd + layer_ws),
        w.rows * (P + T) * L * kvd + w.rows * T * (2 * h * ab + layer_ws) + _head_bytes(a, chunk, T),
    )
    # Policy: keys/values for attention's backward are repeated to every query head (GQA via repeat_kv).
    kv_rep = _kv_bytes(a, hold, a.num_heads)
    saved = layer_saved_bytes(a, hold)
    grads = 3 * h * ab  # gradient of the residual stream and a layer's input/output in flight
    if hold.gradient_checkpointing:  # full sequences (prompt repeated G times), layer inputs kept, one recomputed
        tokens = w.rows * (P + T)
        policy = tokens * (L * h * ab + saved + kv_rep + grads)
        policy += _vision_bytes(a, hold, w.rows, w.image_patches(a))
        if hold.vision_backward:  # its output requires grad there (see phase_flops): each block's input is kept
            policy += w.rows * w.image_patches(a) * a.vision_depth * a.vision_dim * ab
    else:  # shared prompt: prompt tokens once, completions on its repeated cache, every layer kept
        policy = L * (w.prompts * P * (saved + kvd) + w.rows * T * saved + w.rows * (P + T) * kv_rep)
        policy += w.rows * T * grads + vision
    policy += w.rows * T * h * ab * 2 + _head_bytes(a, chunk, T)
    return {"sampling": sampling, "reference": reference, "policy": policy}


# --------------------------------------------------------------------------- FLOPs
def phase_flops(arch: Architecture, work: Workload, hold: Holding, attention: bool = True) -> dict[str, float]:
    """FLOPs of one generation batch: `sampling` (its `vision` and `decode` parts listed too), `reference`,
    `policy` (forward + backward; recomputation under checkpointing included). Matmuls only, 2 per
    multiply-add; attention counted over every key a query is shown (padding masks make kernels compute
    the full rectangle); `attention=False` leaves attention out (`torch.utils.flop_counter` does not see
    CPU attention kernels, so tests compare without it)."""
    a, w = arch, work
    P, T, L = w.prompt_tokens(a), w.completion_tokens, a.num_layers
    lin, head = 2 * a.text_linear_params, 2 * a.vocab_size * a.hidden_size
    # Adapters run in sampling and in the policy's passes (the reference disables them).
    adapters = 2 * a.lora_params(hold.lora_r, hold.lora_targets, hold.lora_include_vision) if hold.lora else 0
    patches = w.image_patches(a)
    patch_embed = a.in_channels * a.temporal_patch_size * a.patch_size**2 * a.vision_dim
    vision_one = 2 * (patch_embed + a.vision_linear_params) * patches
    vision_one += 4 * a.vision_depth * a.vision_dim * patches**2 * attention
    vision = w.prompts * (vision_one + 2 * a.merger_linear_params * (patches // a.merge_size**2))

    def attn(queries: int, keys: int) -> float:
        return 4 * L * a.num_heads * a.head_dim * queries * keys * attention

    # Sampling: prompt prefilled once per group; each decode step attends to the preallocated P + T keys.
    prefill = w.prompts * (P * (lin + adapters) + attn(P, P))
    decode = w.rows * (T * (lin + adapters + head) + attn(T, P + T))
    # Reference (and the policy's forward without checkpointing): the same prompt pass, completions on its cache.
    lin_f = w.prompts * P * lin + w.rows * T * lin
    attn_f = w.prompts * attn(P, P) + w.rows * attn(T, P + T)
    reference = vision + lin_f + attn_f + w.rows * T * head
    tokens = w.prompts * P + w.rows * T
    lin_f += tokens * adapters
    vision_f = vision
    if hold.gradient_checkpointing:  # full sequences (prompt repeated per completion), each layer run twice
        tokens = w.rows * (P + T)
        lin_f, attn_f = tokens * (lin + adapters), w.rows * attn(P + T, P + T)
        # The vision tower runs for every repeated image; where peft's input-gradient hook reaches it
        # (`Holding.vision_backward`) it also runs its input-gradient backward: about twice its forward.
        vision_f = (2 if hold.vision_backward else 1) * w.group_size * vision
    fwd = vision_f + lin_f + attn_f + w.rows * T * head
    recompute = (lin_f + attn_f) if hold.gradient_checkpointing else 0.0
    # Backward: input gradients of the linears (as many FLOPs as their forward; weight gradients double that
    # under full fine-tuning), attention twice its forward, the head's logits recomputed plus its hidden
    # gradient (and weight gradient when trained), the adapters' own small matmuls.
    if hold.lora:  # adapters: input and weight gradients of both A and B
        bwd = lin_f + 2 * attn_f + 2 * w.rows * T * head + tokens * adapters
    else:
        bwd = 2 * lin_f + 2 * attn_f + 3 * w.rows * T * head
    return {
        "vision": vision,
        "decode": decode,
        "sampling": vision + prefill + decode,
        "reference": reference,
        "policy": fwd + recompute + bwd,
    }


# --------------------------------------------------------------------------- the estimate
MAX_SEQUENCE_TOKENS = 1 << 20
"""Longest prompt + completion estimated: beyond every Qwen-VL context, so any figure would be fiction."""


def _refuse_impossible(cfg: Config, image_size: int | None, world_size: int) -> None:
    """What `train` would refuse, refused here too: an estimate that says "fits" for such a run misleads."""
    if world_size > 1 and cfg.grpo.prompts_per_step % world_size:
        raise UserError(
            f"--world-size {world_size}: grpo.prompts_per_step={cfg.grpo.prompts_per_step} must be divisible by the "
            "number of processes (train refuses it: every rank gets whole prompt groups)"
        )
    side = int(math.sqrt(cfg.model.max_pixels))
    if image_size is not None and image_size > side:
        raise UserError(
            f"--image-size {image_size} is over the {side} px side that model.max_pixels={cfg.model.max_pixels} "
            "keeps (the processor shrinks larger images); lower it or raise model.max_pixels"
        )


def estimate(
    cfg: Config,
    arch: Architecture | None = None,
    image_size: int | None = None,
    prompt_text_tokens: int = PROMPT_TEXT_TOKENS,
    world_size: int = 1,
) -> Estimate:
    """Memory and FLOPs of one generation batch on one process, from the config (nothing loaded)."""
    _refuse_impossible(cfg, image_size, world_size)
    arch = arch or load_architecture(cfg.model.name)
    work = workload_from_config(cfg, image_size, prompt_text_tokens, world_size)
    if work.prompt_tokens(arch) + work.completion_tokens > MAX_SEQUENCE_TOKENS:
        raise UserError(
            f"a sequence of {work.prompt_tokens(arch)} prompt + {work.completion_tokens} completion tokens "
            f"(grpo.max_completion_length) is over {MAX_SEQUENCE_TOKENS}, past any Qwen-VL context; nothing to estimate"
        )
    hold = holding_from_config(cfg)
    est = Estimate(arch, work, hold)
    est.memory = {"weights": weight_bytes(arch, hold), "trainable": trainable_bytes(arch, hold)}
    est.phases = phase_bytes(arch, work, hold)
    est.flops = phase_flops(arch, work, hold)
    return est


CPU_RUNTIME_GIB = 2.0
"""Peak RSS of a CPU training process besides the tensors the estimate counts: Python, torch,
transformers and the tokenizer (about 1 GiB before any model), plus allocator slack (glibc keeps freed
blocks of the per-layer 4-bit dequantisation buffers). Calibrated on Qwen2-VL-2B by `make real-check`
(1 step, G=4, 8 tokens; measured peak 8.58 GiB), then checked on the two others: Qwen3-VL-2B 8.68 GiB
(estimate 8.35, ratio 0.96), Qwen2.5-VL-3B 12.65 GiB (estimate 13.18, ratio 1.04)."""
CHECKPOINT_BYTES = 2
"""Bytes per parameter of a checkpoint on disk (the Qwen-VL checkpoints, and the random ones, are bf16)."""


def cpu_rss_gib(est: Estimate) -> float:
    """The peak resident memory (GiB) of a CPU run, what the kernel reports as the process's max RSS.

    transformers keeps the safetensors checkpoint memory-mapped: non-quantised weights are views of it (already
    in `weights`), and under 4-bit each quantised layer's bf16 source pages, read once, stay resident beside the
    4-bit copy. AdamW's foreach step adds about two float32 copies of the trainable parameters."""
    mapped = est.arch.text_linear_params * CHECKPOINT_BYTES if est.hold.load_in_4bit else 0.0
    adamw = est.memory["trainable"] / 2  # 16 bytes/parameter held; 8 more in flight during the step
    return est.peak_gib() + (mapped + adamw) / GIB + CPU_RUNTIME_GIB


def describe(est: Estimate, device: Device | None = None, overhead_gib: float = 0.75) -> list[str]:
    """The estimate as lines for a terminal or a log: what is held, per-phase peaks, fit, time."""
    a, w, hd = est.arch, est.work, est.hold
    how = ("4-bit NF4" if hd.load_in_4bit else hd.dtype) + (
        f" + LoRA r={hd.lora_r}" if hd.lora else ", full fine-tuning"
    )
    lines = [
        f"model {a.parameters / 1e9:.2f}B parameters ({how}, compute {hd.dtype}"
        f"{', gradient checkpointing' if hd.gradient_checkpointing else ''}); per generation batch {w.prompts} prompt(s) "
        f"x G={w.group_size}, prompt {w.prompt_tokens(a)} tokens ({w.image_tokens(a)} from a {w.image_size}px image), "
        f"{w.completion_tokens} completion tokens",
        f"memory: weights {est.memory['weights'] / GIB:.2f} GiB, trainable state {est.memory['trainable'] / GIB:.2f} GiB; "
        + ", ".join(f"{k} +{v / GIB:.2f}" for k, v in est.phases.items())
        + f" GiB; peak {est.peak_gib():.2f} GiB allocated (~{est.peak_gib(overhead_gib):.1f} GiB with CUDA context "
        "and allocator slack)",
        "FLOPs per generation batch: "
        + ", ".join(f"{k} {est.flops[k] / 1e12:.2f} T" for k in ("sampling", "reference", "policy")),
    ]
    if device is not None:
        t = est.step_seconds(device)
        fits = est.peak_gib(overhead_gib) <= device.memory_gib
        lines.append(
            f"on {device.name}: {'fits' if fits else 'does NOT fit'} ({est.peak_gib(overhead_gib):.1f} of "
            f"{device.memory_gib:.1f} GiB); ~{sum(t.values()):.1f} s per generation batch ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
            + f"; assumed {EFFICIENCY['matmul']:.0%} of peak)"
        )
    return lines


def one_line(cfg: Config, world_size: int = 1) -> str | None:
    """The estimate in one line for the start of a run, or None when it cannot be made here (an unknown
    architecture, say): it is advice, and a run never fails because of it."""
    try:
        est = estimate(cfg, world_size=world_size)
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    import torch

    phase = max(est.phases, key=est.phases.get)
    cpu = "" if torch.cuda.is_available() else f"; on this CPU about {cpu_rss_gib(est):.1f} GiB peak RSS"
    return (
        f"estimated peak {est.peak_gib():.2f} GiB allocated per process (weights {est.memory['weights'] / GIB:.2f}, "
        f"trainable state {est.memory['trainable'] / GIB:.2f}, {phase} +{est.phases[phase] / GIB:.2f}){cpu}; "
        f"{sum(est.flops[k] for k in ('sampling', 'reference', 'policy')) / 1e12:.2f} TFLOP per generation batch "
        "(othinklab estimate --help)"
    )
