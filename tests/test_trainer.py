"""The GRPO loop end to end: run-directory files, a 4-bit LoRA step, num_iterations, an R1-V file, gradient
accumulation, the final checkpoint whatever num_iterations, no checkpoint from NaN weights, and two-step runs
on Qwen2.5-VL and Qwen3-VL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from archs import ARCHS, build

from othinklab import checkpoint as ckpt_io
from othinklab.cli import main
from othinklab.config import load_config
from othinklab.errors import TrainingError, UserError
from othinklab.kl import grpo_d_beta
from othinklab.metrics import METRICS, read_metrics, read_rollouts
from othinklab.models import add_lora
from othinklab.trainer import train

SMALL = [
    "grpo.prompts_per_step=2",
    "grpo.num_generations=4",
    "grpo.max_completion_length=24",
    "task.num_eval=4",
    "train.threads=1",
]


VARIED = f"reward.accuracy_function={Path(__file__).resolve().parent / 'test_behaviour_identity.py'}:varied_reward"
"""A reward the base earns about half the time whatever it answers, so a 1-2 step run of 2 prompts has
reward spread (the converged base often answers a whole small group alike) and the update is not zero."""


def _cfg(tmp_path, *extra):
    return load_config(None, [*SMALL, f"train.output_dir={tmp_path}", *extra])


@pytest.mark.slow
def test_run_directory_layout(tmp_path, base_dir):
    cfg = _cfg(
        tmp_path,
        "train.total_steps=3",
        "train.save_every=2",
        "kl.schedule=grpo_d",
        "kl.beta_min=0.0",
        "kl.beta_max=0.02",
    )
    res = train(cfg, progress=False)
    run = res.run_dir
    assert (run / "config.yaml").exists() and load_config(run / "config.yaml") == cfg
    m = read_metrics(run)
    assert list(m["step"]) == [0, 1, 2]
    assert set(m.columns) <= set(METRICS) and {
        "kl/beta",
        "kl/value",
        "reward/total",
        "loss/total",
        "time/step_s",
    } <= set(m.columns)
    want_beta = [grpo_d_beta(s, 3, 0.0, 0.02) for s in range(3)]  # the geometry schedule, t=3
    assert m["kl/beta"].tolist() == pytest.approx(want_beta) and want_beta[0] == pytest.approx(0.01)
    assert (m["kl/value"] >= 0).all()
    r = read_rollouts(run)
    assert len(r) == 3 * 2 * 4 and {"prompt_id", "completion", "reward", "advantage", "step"} <= set(r.columns)
    assert r.groupby(["step", "group"])["advantage"].sum().abs().max() < 1e-4  # advantages centre per group
    # per-token detail for the inspector: one token, log-prob and KL per counted completion token
    for _, row in r.iterrows():
        assert len(row["tokens"]) == len(row["token_logprobs"]) == len(row["token_kl"]) == row["length"]
        assert all(lp <= 0 for lp in row["token_logprobs"]) and all(k >= 0 for k in row["token_kl"])
    assert "".join(r["tokens"].iloc[0]).startswith(r["completion"].iloc[0][:5])
    assert all((run / img).is_file() for img in r["image"].unique())
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert ckpts == ["step-000002", "step-000003"]
    assert (run / "checkpoints" / "step-000003" / "model" / "adapter_config.json").exists()
    # the same run again without --resume is refused, and another config in the same directory too
    with pytest.raises(UserError, match="--resume"):
        train(cfg, progress=False)
    with pytest.raises(UserError, match="another config"):
        train(_cfg(tmp_path, "train.total_steps=3", "train.save_every=2", "kl.beta=0.5"), progress=False)


@pytest.mark.slow
def test_4bit_lora_grpo_step_on_cpu(tmp_path, base_dir):
    cfg = _cfg(
        tmp_path, "train.total_steps=1", "model.load_in_4bit=true", "model.lora=true", VARIED, "grpo.temperature=1.5"
    )
    res = train(cfg, progress=False)
    m = read_metrics(res.run_dir)
    assert len(m) == 1 and m["grad/norm"].iloc[0] > 0
    assert any(type(x).__name__ == "Linear4bit" for x in res.model.modules())


@pytest.mark.slow
def test_num_iterations_activates_the_ratio(tmp_path, base_dir):
    cfg = _cfg(tmp_path, "train.total_steps=2", "grpo.num_iterations=2", "train.learning_rate=0.01", VARIED)
    m = read_metrics(train(cfg, progress=False).run_dir)
    assert m["ratio/mean"].iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert abs(m["ratio/mean"].iloc[1] - 1.0) > 1e-4  # second update on the same batch: pi_theta != pi_old


@pytest.mark.slow
def test_trains_from_an_r1v_file_few_shot(tmp_path, base_dir):
    from r1v_files import write_r1v_jsonl

    from othinklab.tasks import make_task

    data = write_r1v_jsonl(make_task("geometry").samples(10), tmp_path / "train.jsonl", tmp_path / "img")
    cfg = _cfg(tmp_path, "task.name=geometry", f"task.data_path={data}", "task.num_train=6", "train.total_steps=4")
    res = train(cfg, progress=False)
    ids = read_rollouts(res.run_dir)["prompt_id"]
    assert ids.nunique() == 6  # 4 steps x 2 prompts = 8 draws from the 6-sample few-shot pool
    bad = _cfg(tmp_path, "task.name=geometry", f"task.data_path={tmp_path / 'none.jsonl'}", "train.run_name=bad")
    with pytest.raises(UserError, match="none.jsonl"):
        train(bad, progress=False)


@pytest.mark.slow
def test_gradient_accumulation_uses_every_generation_batch(tmp_path, base_dir):
    cfg = _cfg(tmp_path, "train.total_steps=2", "train.gradient_accumulation_steps=3", "train.lr_schedule=linear")
    res = train(cfg, progress=False)
    r = read_rollouts(res.run_dir)
    assert len(r) == 2 * 3 * 2 * 4  # steps x accumulated batches x prompts x G
    assert r.groupby("step")["prompt_id"].nunique().tolist() == [6, 6]  # fresh prompts in every batch
    assert r.groupby("step")["group"].nunique().tolist() == [6, 6]
    assert read_metrics(res.run_dir)["lr"].tolist() == pytest.approx([1e-4, 0.5e-4])


FAST = ["grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.max_completion_length=8", "model.name=tiny-init"]


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_the_final_checkpoint_is_written_whatever_num_iterations(tmp_path, capsys):
    args = [*FAST, "train.total_steps=3", "grpo.num_iterations=2", "train.save_every=0"]
    assert main(["train", *args, f"train.output_dir={tmp_path}", "train.run_name=r"]) == 0
    latest = ckpt_io.latest_checkpoint(tmp_path / "r" / "checkpoints")
    assert latest is not None and latest.name == "step-000003"
    assert ckpt_io.load_state(latest)[0]["step"] == 3
    # resuming the finished run does nothing more and succeeds
    assert main(["train", "--resume", *args, f"train.output_dir={tmp_path}", "train.run_name=r"]) == 0


@pytest.mark.slow
def test_no_checkpoint_is_written_from_nonfinite_weights(tmp_path):
    from othinklab.trainer import train

    cfg = load_config(None, [*FAST, "train.total_steps=3", "train.save_every=1", f"train.output_dir={tmp_path}"])
    holder = {}

    def poison(row):
        if row["step"] == 1:  # after step 1's update, before its checkpoint
            model = holder["model"]
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    from othinklab.models import load_model

    holder["model"], processor = load_model(cfg.model)
    with pytest.raises(TrainingError) as info:
        train(cfg, callbacks=[poison], progress=False, model_and_processor=(holder["model"], processor))
    ckpts = tmp_path / f"{cfg.task.name}-{cfg.kl.schedule}-seed0" / "checkpoints"
    assert [p.name for p in ckpt_io.complete_checkpoints(ckpts)] == ["step-000001"]
    assert "hold NaN/inf" in str(info.value) and str(ckpts / "step-000001") in str(info.value)


def length_reward(completion: str, solution: str) -> float:
    """A reward with spread on a random model (its accuracy is always 0), so the 2-step run has gradients."""
    return (len(completion) % 7) / 7


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_two_step_grpo_run(arch, tmp_path):
    model, processor = build(arch)
    model = add_lora(model, r=4, alpha=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = load_config(
        None,
        [
            "grpo.prompts_per_step=2",
            "grpo.num_generations=4",
            "grpo.max_completion_length=8",
            "train.total_steps=2",
            "train.learning_rate=0.01",
            "train.threads=1",
            "train.log_rollouts=false",
            f"reward.accuracy_function={__file__}:length_reward",
            f"train.output_dir={tmp_path}",
            "task.num_eval=2",
        ],
    )
    res = train(cfg, progress=False, model_and_processor=(model, processor))
    assert res.steps_done == 2
    from othinklab.metrics import read_jsonl

    rows = read_jsonl(res.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["skipped/nonfinite"] == 0 for r in rows)
    assert rows[0]["reward/std"] > 0
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved, "no LoRA weight changed in two steps"
