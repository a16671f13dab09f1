"""`othinklab.mechanism`: the ablations' KL cache (`<out>/kl/<run>.json`) is remeasured when damaged."""

from __future__ import annotations

import pytest
from cache_damage import BAD_CACHES

from othinklab.grid_report import read_json_cache


@pytest.mark.parametrize("damage", list(BAD_CACHES))
def test_a_damaged_ablation_kl_cache_is_remeasured(damage, tmp_path, monkeypatch):
    """Class 5: the ablations' KL cache (`<out>/kl/<run>.json`) gave a traceback when truncated."""
    import pandas as pd

    from othinklab import mechanism

    run = tmp_path / "runs" / "grpo_d-counting-seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("kl: {}\n")
    results = pd.DataFrame([{"method": "grpo_d", "train_task": "counting", "seed": 0, "run_dir": str(run), "n": 2}])
    measured: list[str] = []
    monkeypatch.setattr(mechanism, "load_trained", lambda r: measured.append(str(r)) or (None, None))
    monkeypatch.setattr(mechanism, "kl_to_base", lambda *a, **k: {"kl_k3": 0.5})
    first = mechanism.measure_runs(tmp_path, results, kl_prompts=1)
    cache = tmp_path / "kl" / f"{run.name}.json"
    assert len(measured) == 1 and cache.exists()
    BAD_CACHES[damage](cache)
    again = mechanism.measure_runs(tmp_path, results, kl_prompts=1)
    assert len(measured) == 2  # remeasured, not a traceback and not a silently dropped run
    pd.testing.assert_frame_equal(first, again)
    assert read_json_cache(cache)["kl"]
