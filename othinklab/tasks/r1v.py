"""Loaders for the R1-V dataset files the paper trains and evaluates on, as `Sample`s.

Why: the synthetic tasks stand in for the real data, and switching to the real thing must change only a
path. R1-V's files come in three shapes — `datasets.save_to_disk` directories (clevr_cogen_a_train,
GEOQA_R1V_Train_8K), parquet, and JSONL with image paths (SuperCLEVR-200, GeoQA test) — with different
column names (`problem`/`question`, `solution`/`ground_truth`, `image`/`image_path`). This module reads
all of them into the one `Sample` shape, with answers normalized to `<answer> X </answer>`.

Few-shot (`limit`, the paper's 100 counting samples) picks rows by a seeded permutation *before* any
image is decoded, so loading 100 rows of a 70k-row file is fast. Bad data raises `DataError` naming the
file, row and field; `skip_bad_rows=True` skips bad rows instead and logs how many and why.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from othinklab.errors import DataError
from othinklab.tasks.base import Sample

log = logging.getLogger("othinklab")

TASK_NAMES = ("counting", "geometry")
IMAGE_COLS = ("image", "image_path")
QUESTION_COLS = ("problem", "question")
ANSWER_COLS = ("solution", "ground_truth")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GEOMETRY_NUMBER = re.compile(r"\d|\\[dt]?frac|√|\\sqrt")


class _BadRow(Exception):
    """A row-level problem that `skip_bad_rows=True` may skip (missing columns never are)."""


def _extract_answer(text: str) -> str | None:
    """`othinklab.rewards.extract_answer`, with a local fallback while that module is absent."""
    try:
        from othinklab.rewards import extract_answer
    except ImportError:
        found = _ANSWER.findall(text)
        return found[-1] if found else None
    return extract_answer(text)


# --------------------------------------------------------------------------- row sources
class _Source:
    """Uniform access to a dataset on disk: row count, column names, raw rows by index (no decoding)."""

    def __init__(self, path: Path, n_rows: int, columns: list[str], get: Callable[[list[int]], list]):
        self.path, self.n_rows, self.columns, self._get = path, n_rows, columns, get

    def rows(self, indices: list[int]) -> list[dict[str, Any]]:
        return self._get(indices)


def _open_source(path: Path) -> _Source:
    if not path.exists():
        raise DataError(f"dataset path {str(path)!r} does not exist")
    if path.is_dir():
        return _open_saved_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _open_parquet(path)
    if suffix in (".jsonl", ".json"):
        return _open_jsonl(path)
    raise DataError(f"{path}: unsupported dataset file; expected a .parquet or .jsonl file or a save_to_disk directory")


def _open_saved_dataset(path: Path) -> _Source:
    import datasets

    if (path / "dataset_dict.json").exists():
        try:
            dd = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any load failure is a data problem here
            raise DataError(f"{path}: cannot load the saved DatasetDict ({exc})") from None
        if not dd:
            raise DataError(f"{path}: the saved DatasetDict has no splits")
        ds = dd["train"] if "train" in dd else dd[next(iter(dd))]
    elif (path / "dataset_info.json").exists() or (path / "state.json").exists():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: cannot load the saved dataset ({exc})") from None
    else:
        raise DataError(
            f"{path}: directory is not a saved dataset (no dataset_dict.json, dataset_info.json or state.json)"
        )
    return _dataset_source(path, ds)


def _dataset_source(path: Path, ds: Any) -> _Source:
    """A loaded `datasets.Dataset` (saved to disk or from the hub) as a row source."""
    raw = ds.with_format("arrow")  # rows as arrow: image structs stay undecoded bytes

    def get(indices: list[int]) -> list[dict[str, Any]]:
        return raw[indices].to_pylist() if indices else []

    return _Source(path, len(ds), list(ds.column_names), get)


def _open_parquet(path: Path) -> _Source:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: cannot read parquet file ({exc})") from None
    columns = list(pf.schema_arrow.names)
    table_cache: list = []

    def get(indices: list[int]) -> list[dict[str, Any]]:
        if not table_cache:
            table_cache.append(pq.read_table(path, memory_map=True))
        return table_cache[0].take(indices).to_pylist() if indices else []

    return _Source(path, pf.metadata.num_rows, columns, get)


def _open_jsonl(path: Path) -> _Source:
    lines = [
        (lineno, line) for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]
    columns: list[str] = []
    for _, line in lines[:1]:
        try:
            first = json.loads(line)
            columns = list(first) if isinstance(first, dict) else []
        except json.JSONDecodeError:
            pass

    def get(indices: list[int]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in indices:
            lineno, line = lines[i]
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append({"__error__": f"malformed JSON ({exc.msg})", "__line__": lineno})
                continue
            if not isinstance(row, dict):
                out.append({"__error__": f"expected a JSON object, got {type(row).__name__}", "__line__": lineno})
                continue
            row["__line__"] = lineno
            out.append(row)
        return out

    return _Source(path, len(lines), columns, get)


# --------------------------------------------------------------------------- field parsing
def _pick(row_or_cols: Iterable[str], names: Sequence[str], field: str, source: _Source, where: str) -> str:
    present = [n for n in names if n in row_or_cols]
    if not present:
        found = sorted(c for c in row_or_cols if not c.startswith("__"))
        raise DataError(
            f"{source.path}{where}: missing the {field} column (expected one of {list(names)}); columns found: {found}"
        )
    return present[0]


def _parse_answer(value: Any, task: str) -> tuple[str, str]:
    """Return (answer, reasoning) from a `solution`/`ground_truth` value; raise `_BadRow` if unusable."""
    if value is None or isinstance(value, bool):
        raise _BadRow(f"unusable answer {value!r}")
    reasoning = ""
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        text = str(value)
        think = _THINK.findall(text)
        if think:
            reasoning = think[-1].strip()
            text = _THINK.sub("", text)
        tagged = _extract_answer(text) if "<answer>" in text else None
        text = tagged if tagged is not None else text
    answer = text.strip()
    if task == "counting":
        try:
            number = float(answer)
        except ValueError:
            raise _BadRow(f"counting answer {answer!r} is not a non-negative integer") from None
        if not math.isfinite(number) or number < 0 or not number.is_integer():
            raise _BadRow(f"counting answer {answer!r} is not a non-negative integer")
        answer = str(int(number))
    elif not _GEOMETRY_NUMBER.search(answer):
        raise _BadRow(f"geometry answer {answer!r} contains no number")
    return answer, reasoning


def _clean_reasoning(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    think = _THINK.findall(value)
    return (think[-1] if think else value).strip()


def _decode_image(value: Any, image_root: Path | None, base_dir: Path) -> Image.Image:
    """PIL image from a PIL image, an Image-feature dict, raw bytes or a path; raise `_BadRow` if bad."""
    if isinstance(value, Image.Image):
        image = value
    else:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray, memoryview)):
            data, label = bytes(value), "image bytes"
        elif isinstance(value, str) and value:
            rel = Path(value).expanduser()
            full = rel if rel.is_absolute() else (image_root or base_dir) / rel
            if not full.is_file():
                raise _BadRow(f"image file not found: {full}")
            data, label = full.read_bytes(), str(full)
        else:
            raise _BadRow(f"no image (value {value!r})")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _BadRow(f"unreadable image ({label}): {exc}") from None
    return image.convert("RGB") if image.mode != "RGB" else image


# --------------------------------------------------------------------------- public API
def load_r1v(
    path: str | Path,
    task: str,
    image_root: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    skip_bad_rows: bool = False,
) -> list[Sample]:
    """Load an R1-V dataset (save_to_disk dir, .parquet, .jsonl, or a hub id `owner/name[:config][@split]`
    through `othinklab.tasks.hub`) as `Sample`s for `task`.

    `task` is "counting" or "geometry" and decides answer validation. Relative `image_path`s resolve
    against `image_root`, else the directory holding `path`. `limit` keeps a seeded random subset
    (returned in row order). Bad rows raise `DataError`, or are skipped and logged with `skip_bad_rows`.
    """
    if task not in TASK_NAMES:
        raise DataError(f"unknown R1-V task {task!r}; choose one of {list(TASK_NAMES)}")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be a positive number of rows, got {limit}")
    from othinklab.tasks import hub

    if hub.is_hub_id(str(path)):  # `owner/name[:config][@split]` that is not a local path
        spec = hub.parse_hub_id(str(path))
        path = Path(str(spec))
        source = _dataset_source(path, hub.load_hub_dataset(spec))
    else:
        path = Path(path).expanduser()
        source = _open_source(path)
    if source.n_rows == 0:
        raise DataError(f"{path}: dataset is empty (no rows)")
    if source.columns:  # known schema: check columns up front (JSONL rows are also checked one by one)
        for names, field in ((IMAGE_COLS, "image"), (QUESTION_COLS, "question"), (ANSWER_COLS, "answer")):
            _pick(source.columns, names, field, source, "")
    root = Path(image_root).expanduser() if image_root is not None else None
    base_dir = path.parent
    stem = path.stem if path.is_file() else path.name

    order = (
        np.random.default_rng(seed).permutation(source.n_rows).tolist()
        if limit is not None
        else list(range(source.n_rows))
    )
    want = source.n_rows if limit is None else min(limit, source.n_rows)
    good: list[Sample] = []
    bad: list[str] = []
    pos = 0
    while len(good) < want and pos < len(order):
        chunk = order[pos : pos + min(1024, want - len(good))]  # bounded memory per batch
        pos += len(chunk)
        chunk.sort()
        for idx, row in zip(chunk, source.rows(chunk)):
            where = f" row {idx}" + (f" (line {row['__line__']})" if "__line__" in row else "")
            try:
                good.append(_make_sample(row, idx, task, stem, source, root, base_dir, where))
            except _BadRow as exc:
                reason = f"{path.name}{where}: {exc}"
                if not skip_bad_rows:
                    raise DataError(f"{path}{where}: {exc}") from None
                bad.append(reason)
    if bad and good:
        log.warning("%s: skipped %d bad row(s), kept %d; first: %s", path, len(bad), len(good), "; ".join(bad[:3]))
    if not good:
        raise DataError(f"{path}: no usable rows ({len(bad)} bad; first: {'; '.join(bad[:3])})")
    good.sort(key=lambda s: s.meta["row"])
    return good


def _make_sample(
    row: dict[str, Any],
    idx: int,
    task: str,
    stem: str,
    source: _Source,
    root: Path | None,
    base_dir: Path,
    where: str,
) -> Sample:
    if "__error__" in row:
        raise _BadRow(row["__error__"])
    img_col = _pick(row, IMAGE_COLS, "image", source, where)
    q_col = _pick(row, QUESTION_COLS, "question", source, where)
    a_col = _pick(row, ANSWER_COLS, "answer", source, where)
    question = row[q_col]
    if not isinstance(question, str) or not question.replace("<image>", "").strip():
        raise _BadRow(f"empty or non-text question {question!r}")
    problem = question.replace("<image>", "").strip()
    answer, reasoning = _parse_answer(row[a_col], task)
    if isinstance(row.get("thinking"), str) and row["thinking"].strip():
        reasoning = _clean_reasoning(row["thinking"])
    img_value = row[img_col]
    if img_value is None and img_col == "image" and row.get("image_path"):
        img_value = row["image_path"]
    try:
        image = _decode_image(img_value, root, base_dir)
    except _BadRow as exc:
        raise _BadRow(f"{exc} (field {img_col!r})") from None
    return Sample(
        id=f"{task}:{stem}:{idx}",
        image=image,
        problem=problem,
        solution=f"<answer> {answer} </answer>",
        reasoning=reasoning,
        task=task,
        meta={"source": str(source.path), "row": idx},
    )


def write_r1v_jsonl(samples: Iterable[Sample], out_path: str | Path, image_dir: str | Path) -> Path:
    """Write `samples` as JSONL in the SuperCLEVR/GeoQA-test layout (image_path, question, ground_truth).

    Images go to `image_dir` as PNGs; `image_path` is relative to the JSONL's directory when the image
    lies under it (else absolute), so `load_r1v(out_path, task)` reads the file back. Counting answers
    are written as ints, like SuperCLEVR-200.
    """
    out_path, image_dir = Path(out_path), Path(image_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    base = out_path.parent.resolve()
    with out_path.open("w", encoding="utf-8") as fh:
        for i, sample in enumerate(samples):
            img_file = image_dir / f"{i:06d}.png"
            sample.image.convert("RGB").save(img_file, format="PNG")
            full = img_file.resolve()
            rel = str(full.relative_to(base)) if full.is_relative_to(base) else str(full)
            tagged = _extract_answer(sample.solution)
            answer: Any = (tagged if tagged is not None else sample.solution).strip()
            if sample.task == "counting" and answer.isdigit():
                answer = int(answer)
            row = {"image_path": rel, "question": sample.problem, "ground_truth": answer}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out_path
