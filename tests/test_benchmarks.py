"""The benchmark scripts' testable parts: `make gpu-check` without CUDA exits 0 and says why it skipped (the
suite never needs a GPU); `make real-check`'s seeded random build, its interrupted-build cleanup and its
skip when memory is short, on a tiny Qwen3-VL config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from archs import qwen3_vl_config

from othinklab import tiny

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the check runs for real (minutes)")
def test_gpu_check_skips_without_cuda():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "gpu-check: skipped: no CUDA device (torch.cuda.is_available() is False); every check needs a GPU"
    )


# --------------------------------------------------------------------------- the real-size build (make real-check)
def _benchmarks():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import _models
    import real_check

    return _models, real_check


@pytest.fixture
def tiny_real_arch(tmp_path, monkeypatch):
    """`make real-check`'s builder pointed at a tiny Qwen3-VL config and a fresh `$OTHINKLAB_HOME`."""
    import json

    _models, _ = _benchmarks()
    raw = qwen3_vl_config(tiny.build_tokenizer(0)).to_dict()
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "tiny-qwen3.json").write_text(json.dumps(raw))
    monkeypatch.setattr(_models, "ARCH_DIR", tmp_path / "arch")
    monkeypatch.setitem(_models.REAL_ARCHS, "Tiny-Qwen3", ("tiny-qwen3.json", 64))
    monkeypatch.setenv("OTHINKLAB_HOME", str(tmp_path / "home"))
    return _models


@pytest.mark.slow
def test_random_build_is_seeded_and_sane(tiny_real_arch):
    _models = tiny_real_arch
    config = _models.arch_config("Tiny-Qwen3", tiny.build_tokenizer(0))
    a, b = _models.build_random(config), _models.build_random(config)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    params = dict(a.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in params.values())
    q = params["model.language_model.layers.0.self_attn.q_proj.weight"].float()
    assert 0.015 < q.std().item() < 0.025 and torch.equal(q, q) and q.abs().max() > 0
    assert torch.all(params["model.language_model.norm.weight"] == 1)
    assert a.lm_head.weight.data_ptr() == a.model.language_model.embed_tokens.weight.data_ptr()  # still tied
    c = _models.build_random(config, seed=1)
    assert not torch.equal(c.state_dict()["lm_head.weight"], sa["lm_head.weight"])


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_a_later_run_trusts(tiny_real_arch, monkeypatch):
    from transformers import PreTrainedModel

    _models = tiny_real_arch
    original = PreTrainedModel.save_pretrained

    def killed(self, path, *a, **kw):
        original(self, path, *a, **kw)
        raise KeyboardInterrupt  # as if interrupted after the weights were written

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        _models.ensure_arch("Tiny-Qwen3")
    home = _models.arch_dir("Tiny-Qwen3").parent
    assert not _models.arch_dir("Tiny-Qwen3").exists() and not list(home.iterdir())
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    path = _models.ensure_arch("Tiny-Qwen3")
    assert (path / "othinklab.json").exists() and (path / "model.safetensors").exists()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert _models.ensure_arch("Tiny-Qwen3") == path and (path / "model.safetensors").stat().st_mtime_ns == stamp


def test_real_check_skips_when_memory_is_short(tiny_real_arch, monkeypatch, tmp_path):
    _, real_check = _benchmarks()
    monkeypatch.setattr(real_check, "free_memory_gib", lambda: 0.25)
    rows = list(real_check.check_arch("Tiny-Qwen3", 1, 60, tmp_path))
    assert [r[:2] for r in rows] == [("SKIP", "build")] and "0.2 GiB available" in rows[0][2]
