"""Seeded runs must log exactly what the code logged before a refactor: the behaviour-identity check.

Why: restructuring the training step (phases, modules, registries) must not change a single number.
The golden files under `tests/data/identity/` were written by the code before the restructuring
(`python tests/test_behaviour_identity.py --write DIR`, with that code first on `PYTHONPATH`); each case re-runs the same seeded config and
compares every non-time column of `metrics.jsonl` (and every field of `rollouts.jsonl`, which holds the
sampled tokens, their log-probs and per-token KL) exactly: a JSON float round-trips bit for bit. Columns added later are allowed; a column
that disappears or a value that moves fails. Regenerate the goldens only for an intended change of
behaviour, and say so in the commit. Float results also depend on the CPU and library versions, so the
goldens carry a fingerprint of the machine that wrote them and the check is skipped (saying why) elsewhere.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "identity"


def varied_reward(completion: str, solution: str) -> float:
    """An accuracy term that the untrained model earns half the time, so groups have reward spread and
    the policy loss is not zero (R1-V's reward gives an untrained model 0 everywhere)."""
    return float(len(completion) % 4 > 1)


SMALL = [
    # The untrained tiny model (built from a seed in seconds, no warm-up) and a reward it sometimes earns.
    "model.name=tiny-init",
    f"reward.accuracy_function={Path(__file__).resolve()}:varied_reward",
    "grpo.prompts_per_step=2",
    "grpo.num_generations=4",
    "grpo.max_completion_length=16",
    "task.num_eval=4",
    "train.threads=1",
]
CASES: dict[str, list[str]] = {
    # GRPO-D with LoRA (the default method), a checkpoint midway.
    "grpo_d_lora": [*SMALL, "train.total_steps=4", "train.save_every=2"],
    # Token aggregation with the linear schedule.
    "token_linear": [*SMALL, "train.total_steps=3", "grpo.aggregation=token", "kl.schedule=linear"],
    # Two optimizer steps per generation batch (ratio and clipping active), two accumulated batches, cosine.
    "iters2_accum2_cosine": [
        *SMALL,
        "train.total_steps=4",
        "grpo.num_iterations=2",
        "train.gradient_accumulation_steps=2",
        "kl.schedule=cosine",
        "train.lr_schedule=cosine",
        "train.warmup_steps=1",
    ],
    # Full fine-tuning (a frozen reference copy) with the adaptive schedule and the k1 estimator.
    "full_adaptive_k1": [
        *SMALL,
        "train.total_steps=3",
        "model.lora=false",
        "kl.schedule=adaptive",
        "kl.estimator=k1",
        "train.learning_rate=1e-5",
    ],
}
SFT_CASE = [*SMALL, "sft.steps=3", "sft.batch_size=2"]
"""The supervised baseline on the same stream."""


def _run(name: str, overrides: list[str], out: Path) -> Path:
    from othinklab.config import load_config

    cfg = load_config(None, [*overrides, f"train.output_dir={out}", f"train.run_name={name}"])
    if name == "sft":
        try:  # the code before the restructuring (which wrote the goldens) had run_sft in sft
            from othinklab.sft import run_sft
        except ImportError:
            from othinklab.sft_run import run_sft

        return run_sft(cfg, progress=False).run_dir
    from othinklab.trainer import train

    return train(cfg, progress=False).run_dir


def fingerprint() -> dict[str, str]:
    """What decides float results besides the code: library versions, CPU model, and a probe computation."""
    import hashlib
    import platform

    import torch
    import transformers

    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line), cpu
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
        probe = hashlib.sha256((a @ a).softmax(dim=-1).numpy().tobytes()).hexdigest()[:16]
    finally:
        torch.set_num_threads(threads)
    return {"torch": torch.__version__, "transformers": transformers.__version__, "cpu": cpu, "probe": probe}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _compare(golden: Path, new: Path) -> None:
    old_rows, new_rows = _rows(golden), _rows(new)
    assert len(new_rows) == len(old_rows), f"{new.name}: {len(new_rows)} rows, golden has {len(old_rows)}"
    for i, (old, cur) in enumerate(zip(old_rows, new_rows)):
        for key, value in old.items():
            if key.startswith("time/"):
                continue
            assert key in cur, f"{new.name} row {i}: column {key!r} disappeared"
            assert _same(value, cur[key]), f"{new.name} row {i}: {key} = {cur[key]!r}, golden {value!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [*CASES, "sft"])
def test_seeded_run_logs_what_the_golden_run_logged(name, tmp_path):
    recorded = json.loads((GOLDEN / "fingerprint.json").read_text())
    if recorded != fingerprint():  # another CPU or library version rounds differently: not a code change
        pytest.skip(f"goldens recorded on {recorded}, this machine is {fingerprint()}; regenerate with --write")
    run = _run(name, SFT_CASE if name == "sft" else CASES[name], tmp_path)
    files = ["metrics.jsonl"] if name == "sft" else ["metrics.jsonl", "rollouts.jsonl"]
    for file in files:
        _compare(GOLDEN / name / file, run / file)


def test_compare_catches_a_moved_value(tmp_path):
    """The comparison itself must fail on a changed number and ignore time columns."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"step": 0, "loss/total": 0.5, "time/step_s": 1.0}\n')
    b.write_text('{"step": 0, "loss/total": 0.5, "time/step_s": 9.0, "new/column": 1}\n')
    _compare(a, b)
    b.write_text('{"step": 0, "loss/total": 0.5000000001}\n')
    with pytest.raises(AssertionError):
        _compare(a, b)


if __name__ == "__main__":  # python tests/test_behaviour_identity.py --write DIR: regenerate the goldens
    import shutil
    import tempfile

    assert sys.argv[1:2] == ["--write"] and len(sys.argv) >= 3, "usage: --write DIR [CASE ...]"
    dest = Path(sys.argv[2])
    only = set(sys.argv[3:])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fingerprint.json").write_text(json.dumps(fingerprint(), indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        for case, overrides in [*CASES.items(), ("sft", SFT_CASE)]:
            if only and case not in only:
                continue
            run = _run(case, overrides, Path(tmp))
            (dest / case).mkdir(parents=True, exist_ok=True)
            for file in ("metrics.jsonl", "rollouts.jsonl"):
                if (run / file).exists() and not (case == "sft" and file == "rollouts.jsonl"):
                    shutil.copy(run / file, dest / case / file)
            print(f"wrote {dest / case}")
    import othinklab

    root = Path(othinklab.__file__).parent
    mixed = [
        m.__file__ for n, m in sys.modules.items() if n.startswith("othinklab") and root not in Path(m.__file__).parents
    ]
    assert not mixed, f"modules from outside {root} were used: {mixed}"
