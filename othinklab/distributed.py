"""Data parallelism on `torch.distributed`, for runs launched by `torchrun` or `accelerate launch`.

Why: when one GPU is not enough the same config should run on several, and give the same run. The
launcher starts the processes and sets `RANK`/`WORLD_SIZE`/`LOCAL_RANK`; this module only joins the
process group (NCCL on GPUs, gloo on CPUs), splits each generation batch's prompts across ranks (a
prompt's G completions stay on one rank, so advantages stay per group), and gathers what rank 0 logs.
A single process (no `WORLD_SIZE`, or 1) touches none of `torch.distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from othinklab.errors import UserError
from othinklab.grpo import token_mean_weights
from othinklab.sampling import RowShard


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank among `world` processes and the device it owns."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, rollouts and checkpoints; the others only compute."""
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """This rank's contiguous share of a global batch (rank order = the single-process order)."""
        if len(items) % self.world:
            raise UserError(
                f"grpo.prompts_per_step={len(items)} must be divisible by the number of processes ({self.world}) "
                "so every rank gets whole prompt groups"
            )
        per = len(items) // self.world
        return items[self.rank * per : (self.rank + 1) * per]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank); `[obj]` in one process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Each float summed over ranks (one collective for the list)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_done(self, done: torch.Tensor) -> bool:
        """Every row on every rank has finished decoding (`RowShard.all_done`; keeps ranks in lockstep)."""
        if not self.enabled:
            return bool(done.all())
        t = torch.tensor([1 if bool(done.all()) else 0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @property
    def device(self) -> torch.device:
        if torch.cuda.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def setup() -> Dist:
    """Join the process group the launcher prepared (idempotent); a plain process gets `Dist()`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def model_device(info: Dist) -> str | None:
    """The device a rank loads its model on (its own GPU), or None for the default."""
    if info.enabled and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return None


# --------------------------------------------------------------------------- the training step's data-parallel parts
def wrap_policy(policy: torch.nn.Module, ddp: Dist, device: torch.device) -> torch.nn.Module:
    """The policy forward wrapped in `DistributedDataParallel` under several processes (as it is in one)."""
    if not ddp.enabled:
        return policy
    return torch.nn.parallel.DistributedDataParallel(
        policy, device_ids=[device.index] if device.type == "cuda" else None
    )


def row_shard(ddp: Dist, rows: int, total: int) -> RowShard | None:
    """This rank's rows of a sampled batch, so N processes draw exactly the tokens one would."""
    return RowShard(ddp.rank * rows, total, ddp.all_done) if ddp.enabled else None


TOKEN_WEIGHTED = tuple("kl/value clip/fraction clip/low_fraction clip/high_fraction ratio/mean policy/entropy".split())
"""Stats that are means over completion tokens (the rest are means over completions, or the loss)."""


def reduce_stats(
    stats: dict[str, float], mask: torch.Tensor, ddp: Dist, aggregation: str
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


def token_weights(masks: list[torch.Tensor], ddp: Dist) -> list[float]:
    """Per-batch loss weights that make the token means of accumulated batches (on every rank) one mean
    over all of the step's tokens (`aggregation="token"`; see `grpo.token_mean_weights`)."""
    local = [float(m.sum()) for m in masks]
    return token_mean_weights(local, ddp.sum([sum(local)])[0], ddp.world)
