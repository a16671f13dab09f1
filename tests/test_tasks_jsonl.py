"""`othinklab.tasks.jsonl`: any JSONL line parses to a row or names its problem (property-based)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from property_strategies import FAST

from othinklab.tasks.jsonl import parse_jsonl_line


@FAST
@given(st.binary(max_size=300))
def test_any_jsonl_line_parses_to_a_row_or_names_its_problem(raw):
    row = parse_jsonl_line(raw, 1)
    assert isinstance(row, dict) and row["__line__"] == 1
