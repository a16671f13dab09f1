"""JSONL dataset files read line by line, each line decoded on its own.

Why: a JSONL file from elsewhere can be huge, hold one gigantic line, mix encodings or carry U+2028 inside
a string (which `str.splitlines` treats as a line break, silently cutting a row in two). Indexing byte
offsets of b"\\n"-separated lines keeps memory bounded and makes every problem a row-level error naming
the line and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from othinklab.bounds import show
from othinklab.errors import DataError

MAX_LINE_BYTES = 4_000_000
"""Longest JSONL line read (bytes); R1-V rows are a few hundred (images are separate files)."""
_BOM = b"\xef\xbb\xbf"


def index_jsonl(path: Path) -> list[tuple[int, int, int]]:
    """(line number, byte offset, byte length) of every non-blank line; length -1 for an over-long line."""
    entries: list[tuple[int, int, int]] = []
    try:
        with path.open("rb") as fh:
            offset = lineno = 0
            while line := fh.readline(MAX_LINE_BYTES + 1):
                lineno += 1
                start = offset
                offset += len(line)
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    while (more := fh.readline(1 << 20)) and not more.endswith(b"\n"):
                        offset += len(more)
                    offset += len(more)
                    entries.append((lineno, start, -1))
                elif line.strip() and line.strip() != _BOM:
                    entries.append((lineno, start, len(line)))
    except OSError as exc:
        raise DataError(f"{show(str(path))}: cannot read the file ({exc.strerror})") from None
    return entries


def parse_jsonl_line(raw: bytes, lineno: int) -> dict[str, Any]:
    """One JSONL line as a dict, or a row carrying `__error__` that says what is wrong and what to do."""
    if lineno == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {
            "__error__": f"is not UTF-8 text (byte {exc.start} of the line is {raw[exc.start : exc.start + 1]!r}); "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            "__line__": lineno,
        }
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"__error__": f"malformed JSON ({exc.msg} at column {exc.colno})", "__line__": lineno}
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting deeper than the parser allows
        return {"__error__": f"unusable JSON ({type(exc).__name__}: {str(exc)[:100]})", "__line__": lineno}
    if not isinstance(row, dict):
        return {"__error__": f"expected a JSON object, got {type(row).__name__}", "__line__": lineno}
    row["__line__"] = lineno
    return row


def open_jsonl(path: Path) -> tuple[int, list[str], Callable[[list[int]], list[dict[str, Any]]]]:
    """(row count, columns of the first row, rows-by-index reader) of a JSONL file, without reading it whole."""
    entries = index_jsonl(path)

    def read(entry: tuple[int, int, int], fh: Any) -> dict[str, Any]:
        lineno, offset, length = entry
        if length < 0:
            return {
                "__error__": f"line is longer than {MAX_LINE_BYTES} bytes; is this a JSONL file?",
                "__line__": lineno,
            }
        fh.seek(offset)
        return parse_jsonl_line(fh.read(length), lineno)

    def get(indices: list[int]) -> list[dict[str, Any]]:
        with path.open("rb") as fh:
            return [read(entries[i], fh) for i in indices]

    columns: list[str] = []
    if entries:
        first = get([0])[0]
        columns = [] if "__error__" in first else [c for c in first if c != "__line__"]
    return len(entries), columns, get
