"""`othinklab.metrics`: the JSONL logs read and truncate safely after a crash."""

from __future__ import annotations

from othinklab.metrics import read_jsonl, truncate_from_step


def test_readers_and_resume_tolerate_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n{"step": 2, "a"')
    assert [r["step"] for r in read_jsonl(path)] == [0, 1]
    assert truncate_from_step(path, 1) == 1
    assert path.read_text() == '{"step": 0, "a": 1}\n'
