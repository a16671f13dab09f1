"""Test helper: the ways a JSON cache on disk gets damaged (older format, truncated, empty, not JSON, ...),
shared by the grid's and the ablations' cache tests (issue 27 class 5)."""

from __future__ import annotations

import json

BAD_CACHES = {
    "older format (no per_prompt)": lambda p: p.write_text(json.dumps({"rows": [{"method": "grpo_d"}]})),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "not JSON": lambda p: p.write_bytes(b"\xff\xfe\x00garbage"),
    "a list": lambda p: p.write_text("[]"),
    "no rows": lambda p: p.write_text(json.dumps({"rows": [], "per_prompt": {}})),
}
