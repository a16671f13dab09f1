"""Hub dataset ids in task.data_path: loaded through `datasets` from a cache built here, offline; no cache -> exit 2;
a local path without its suffix is never sent to the hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from othinklab.errors import DataError, UserError
from othinklab.tasks import load_r1v, make_task
from othinklab.tasks.hub import HubId, is_hub_id, load_hub_dataset, parse_hub_id


def _rows(n: int = 6) -> dict:
    samples = make_task("counting").samples(n, split="train", seed=3)
    return {
        "image": [s.image for s in samples],
        "problem": [s.problem for s in samples],
        "solution": [s.solution for s in samples],
    }


def _build_cache(datasets_cache: Path, repo: str, parquet: Path) -> None:
    """Prepare `parquet` the way `load_dataset(repo)` leaves a downloaded dataset in the datasets cache."""
    import datasets
    from datasets.packaged_modules.parquet.parquet import Parquet

    datasets.Dataset.from_dict(_rows()).cast_column("image", datasets.Image()).to_parquet(str(parquet))
    owner, name = repo.split("/")
    build = datasets_cache.parent / "build"
    b = Parquet(
        cache_dir=str(build),
        dataset_name=name,
        config_id="default",
        hash="0" * 16,
        data_files={"train": str(parquet), "test": str(parquet)},
    )
    b.download_and_prepare()
    datasets_cache.mkdir(parents=True, exist_ok=True)
    shutil.move(str(build / name), str(datasets_cache / f"{owner}___{name}"))


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "datasets"
    _build_cache(cache, "someone/counting_toy", tmp_path / "train.parquet")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def test_parse_hub_ids(tmp_path):
    assert parse_hub_id("leonardPKU/clevr_cogen_a_train") == HubId("leonardPKU/clevr_cogen_a_train")
    assert parse_hub_id("o/n:cfg@train") == HubId("o/n", "cfg", "train")
    assert str(HubId("o/n", "cfg", "test")) == "o/n:cfg@test"
    for local in ("runs/data.jsonl", "/abs/path", "a/b/c", "file.parquet", "o/n.parquet"):
        assert parse_hub_id(local) is None, local
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "n").mkdir()
    assert is_hub_id("o/n")
    assert not is_hub_id(str(tmp_path / "o" / "n"))  # an existing directory is a local dataset


def test_hub_rows_go_through_the_r1v_conversion(offline_cache):
    from_hub = load_r1v("someone/counting_toy", "counting")
    local = load_r1v(offline_cache / "train.parquet", "counting")
    assert len(from_hub) == len(local) == 6
    for h, loc in zip(from_hub, local):
        assert (h.problem, h.solution, h.task) == (loc.problem, loc.solution, loc.task)
        assert np.array_equal(np.asarray(h.image), np.asarray(loc.image))
    assert from_hub[0].id.startswith("counting:counting_toy")
    few = load_r1v("someone/counting_toy@test", "counting", limit=3, seed=1)
    assert len(few) == 3 and {s.problem for s in few} <= {s.problem for s in local}


def test_unknown_split_is_named(offline_cache):
    with pytest.raises(DataError, match="someone/counting_toy@validation"):
        load_hub_dataset(parse_hub_id("someone/counting_toy@validation"))


def test_offline_without_cache_is_exit_2_naming_id_and_cache(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "othinklab.cli", "eval", "--data", "nobody/not_cached@train", "--task", "counting"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nobody/not_cached@train" in proc.stderr
    assert str(tmp_path / "hf" / "datasets") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_local_path_without_its_suffix_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    """Class 12: `data/train` beside `data/train.jsonl` was looked up on the hub as a dataset id."""
    from othinklab.tasks import hub, load_r1v

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    monkeypatch.setattr(hub, "load_hub_dataset", lambda spec: pytest.fail(f"sent {spec} to the hub"))
    with pytest.raises(UserError, match=r"did you mean 'data/train.jsonl'\?"):
        load_r1v("data/train", "counting")
    with pytest.raises(UserError, match="does not exist"):
        load_r1v("data/valid", "counting")  # a local folder's file, not the hub dataset `data/valid`
