"""The embedded default behaves as designed on any CPU: checks on distributions, not bytes.

Why: the same seed builds a base with other bytes on another CPU (other kernels, other reduction order), so
byte-exact goldens (test_behaviour_identity.py) only protect the machine that wrote them. These checks hold
with tolerances: the warmed base is the designed mixture (right off the slipped slice, slipped on it), and
GRPO-D from it learns each task within a few dozen steps. The bands were set from two builds whose bytes
differ (2 and 1 torch threads: another reduction order, as on another CPU) and the validation split's
search (docs/results.md), with room for a third.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

N_VAL = 64


def _val(task: str):
    from othinklab.tasks import make_task

    return make_task(task).samples(N_VAL, split="val", seed=0)


def _scores(model, processor, samples) -> dict[str, float]:
    """Greedy and sampled (8 at T = 1) accuracy on `samples`, overall and on the warm-up's slipped slice."""
    from othinklab.evaluate import evaluate_tasks
    from othinklab.warmup import slip

    rec = evaluate_tasks(model, processor, samples, num_samples=8, seed=0)
    slipped = {s.id for s in samples if slip(s)}
    rec = rec.assign(slipped=rec["id"].isin(slipped))
    out = {}
    for mode in ("greedy", "sampled"):
        r = rec[rec["mode"] == mode]
        out[mode] = float(r["accuracy"].mean())
        out[f"{mode}_slipped"] = float(r[r["slipped"]]["accuracy"].mean())
        out[f"{mode}_clean"] = float(r[~r["slipped"]]["accuracy"].mean())
        out[f"{mode}_format"] = float(r["format"].mean())
    return out


@pytest.fixture(scope="module")
def base(base_dir):
    from othinklab.models import load_model

    return load_model(str(base_dir))


@pytest.mark.parametrize("task", ["counting", "geometry"])
def test_base_is_the_designed_mixture(base, task):
    """Measured on two builds whose bytes differ (2 and 1 threads): sampled accuracy on the slipped slice
    0.17 / 0.16 (counting), 0.19 / 0.26 (geometry), off it 0.62 / 0.67 and 0.69 / 0.81; greedy on the slice
    0.21 / 0.05 and 0.21 / 0.25, off it 0.86 / 0.86 and 0.89 / 1.00; sampled format 0.83-0.88."""
    s = _scores(*base, _val(task))
    # The slipped slice: right in a learnable share of samples, well below the rest of the task.
    assert 0.1 <= s["sampled_slipped"] <= 0.45, s
    assert s["sampled_clean"] >= s["sampled_slipped"] + 0.15, s
    # Wrong under greedy decoding on the slice, competent off it.
    assert s["greedy_slipped"] <= 0.45 and s["greedy_clean"] >= 0.8, s
    # Untagged answers: the format is imperfect when sampling, never under greedy decoding.
    assert 0.7 <= s["sampled_format"] <= 0.97 and s["greedy_format"] >= 0.95, s


@pytest.mark.parametrize("task", ["counting", "geometry"])
def test_grpo_d_learns_each_task_from_the_base(base_dir, task, tmp_path):
    """40 GRPO-D steps at the shipped settings, two seeds: the slipped slice's sampled accuracy rises on
    average (geometry by at least 10 points, +24.1 measured on the shipped build; counting by at least 3,
    +4.9 measured: in 40 steps counting mostly learns the format), and overall sampled accuracy does not fall."""
    from othinklab.config import load_config
    from othinklab.models import load_model
    from othinklab.rng import seed_everything
    from othinklab.trainer import train

    before, after = [], []
    for seed in (0, 1):
        cfg = load_config(
            f"configs/{task}_grpo_d.yaml",
            [
                "train.total_steps=40",
                "grpo.prompts_per_step=6",
                f"train.seed={seed}",
                f"train.output_dir={tmp_path}",
                f"train.run_name={task}-{seed}",
                "train.save_every=1000",
                "train.log_rollouts=false",
            ],
        )
        seed_everything(seed)
        model, processor = load_model(cfg.model)
        before.append(_scores(model, processor, _val(task)))
        res = train(cfg, model_and_processor=(model, processor))
        after.append(_scores(res.model, processor, _val(task)))

    def gain(key: str) -> float:
        return sum(a[key] - b[key] for a, b in zip(after, before)) / len(before)

    assert gain("sampled_slipped") >= {"counting": 0.03, "geometry": 0.10}[task], (
        gain("sampled_slipped"),
        before,
        after,
    )
    assert gain("sampled") >= 0.0, (before, after)
