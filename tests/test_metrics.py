"""`othinklab.metrics`: the JSONL logs read and truncate safely after a crash; a resume reads only the tail
of a large log and survives malformed rows."""

from __future__ import annotations

import json

from othinklab.metrics import read_jsonl, truncate_from_step


def test_readers_and_resume_tolerate_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n{"step": 2, "a"')
    assert [r["step"] for r in read_jsonl(path)] == [0, 1]
    assert truncate_from_step(path, 1) == 1
    assert path.read_text() == '{"step": 0, "a": 1}\n'


# --------------------------------------------------------------------------- class 9/11: resume reads only the tail
def test_resume_truncation_reads_only_the_tail_and_survives_malformed_rows(tmp_path, monkeypatch):
    """Class 9: a resume parsed all of a 770 MB rollouts.jsonl (4.96 GB); class 11: a malformed row
    (`[1]`, a string step) raised a traceback on resume."""
    from othinklab import metrics

    path = tmp_path / "rollouts.jsonl"
    head = "".join(json.dumps({"step": i // 100, "text": "x" * 200}) + "\n" for i in range(20_000))
    tail = '[1]\n{"step": "x"}\n"text"\n' + "".join(json.dumps({"step": 200 + i}) + "\n" for i in range(5))
    path.write_text(head + '{"step": 199}\n' + tail + '{"step": 205, "torn"')
    parsed: list[int] = []
    real = json.loads
    monkeypatch.setattr(metrics.json, "loads", lambda b, *a, **k: parsed.append(len(b)) or real(b, *a, **k))
    kept = metrics.truncate_from_step(path, 200)
    assert kept == 20_001 and path.read_text() == head + '{"step": 199}\n'
    assert len(parsed) < 20  # only the tail's rows were parsed, not 20,000
