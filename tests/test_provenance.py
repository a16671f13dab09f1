"""Provenance records the code that *ran*: the git state taken at the start of a long run."""

from __future__ import annotations

import json

from othinklab import provenance


def test_state_at_start_is_recorded_and_a_moved_checkout_is_named(monkeypatch, tmp_path):
    start = {"commit": "a" * 40, "dirty": False}
    end = {"commit": "b" * 40, "dirty": True}
    monkeypatch.setattr(provenance, "git_state", lambda repo=None: dict(end))
    path = provenance.write_provenance(tmp_path / "p.json", "othinklab grid", 12.34, {"preset": "x"}, git=start)
    rec = json.loads(path.read_text())
    assert rec["commit"] == "a" * 40 and rec["dirty"] is False
    assert rec["git_at_end"] == end and rec["wall_seconds"] == 12.3 and rec["preset"] == "x"


def test_unchanged_checkout_adds_nothing(monkeypatch):
    same = {"commit": "c" * 40, "dirty": False}
    monkeypatch.setattr(provenance, "git_state", lambda repo=None: dict(same))
    rec = provenance.provenance("cmd", 1.0, git=dict(same))
    assert "git_at_end" not in rec and rec["commit"] == "c" * 40
    assert provenance.provenance("cmd", 1.0)["commit"] == "c" * 40  # no start state: taken now


def test_machine_names_the_cpu_model_and_vector_isa(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 fma avx512f amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2\n")  # fmt: skip
    assert provenance.cpu_info(info) == {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8481C",
        "cpu_isa": ["avx2", "fma", "avx512f", "amx_tile"],
    }
    assert provenance.cpu_info(tmp_path / "missing")["cpu_isa"] == []
    m = provenance.machine()
    assert {"cpu_model", "cpu_isa", "torch_cpu_capability"} <= set(m) and isinstance(m["torch_cpu_capability"], str)
