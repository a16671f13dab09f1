"""Loaders for the R1-V dataset files the paper trains and evaluates on, as `Sample`s.

Why: switching from the synthetic stand-ins to the real data must change only a path. R1-V's files come as
`save_to_disk` directories (clevr_cogen_a_train, GEOQA_R1V_Train_8K), parquet, and JSONL with image paths
(SuperCLEVR-200, GeoQA test), with different column names (`problem`/`question`, `solution`/`ground_truth`,
`image`/`image_path`); all become `Sample`s with answers normalized to `<answer> X </answer>`.

Few-shot (`limit`, the paper's 100 counting samples) picks rows by a seeded permutation *before* any image
is decoded. Bad data raises `DataError` naming the file, row and field; `skip_bad_rows=True` skips and logs.
Hostile files stay bounded: JSONL is read line by line (`tasks.jsonl`), image headers are checked before
decoding (pixels, aspect ratio, file size), big images are shrunk to `model.max_pixels`, and questions
carrying chat-template control tokens (`<|im_start|>`, ...) are refused.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from othinklab.bounds import show
from othinklab.errors import DataError
from othinklab.rewards import extract_answer
from othinklab.tasks.base import LazyImage, Sample, control_tokens_in
from othinklab.tasks.jsonl import open_jsonl

log = logging.getLogger("othinklab")

TASK_NAMES = ("counting", "geometry")
IMAGE_COLS = ("image", "image_path")
QUESTION_COLS = ("problem", "question")
ANSWER_COLS = ("solution", "ground_truth")

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_GEOMETRY_NUMBER = re.compile(r"\d|\\[dt]?frac|√|\\sqrt")

MAX_IMAGE_BYTES = 256_000_000
"""Largest image file read."""
DECODE_FACTOR = 64
"""Images over this many times `model.max_pixels` are refused before decoding (a decompression bomb)."""
DEFAULT_MAX_PIXELS = 401408
"""`model.max_pixels`'s default, used for the decode limit when the caller gives none."""
MAX_ASPECT = 200
"""Longest side / shortest side beyond which Qwen2-VL's processor refuses an image."""


class _BadRow(Exception):
    """A row-level problem that `skip_bad_rows=True` may skip (missing columns never are)."""


# --------------------------------------------------------------------------- row sources
@dataclass
class _Source:
    """Uniform access to a dataset on disk: row count, column names, raw rows by index (no decoding)."""

    path: Path
    n_rows: int
    columns: list[str]
    rows: Callable[[list[int]], list[dict[str, Any]]]


def _open_source(path: Path) -> _Source:
    if not path.exists():
        raise DataError(f"dataset path {str(path)!r} does not exist{_did_you_mean(path)}")
    if path.is_dir():
        return _open_saved_dataset(path)
    refuse_special_file(path, "dataset file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _open_parquet(path)
    if suffix in (".jsonl", ".json"):
        return _Source(path, *open_jsonl(path))
    raise DataError(f"{path}: unsupported dataset file; expected a .parquet or .jsonl file or a save_to_disk directory")


def refuse_special_file(path: Path, what: str) -> None:
    """A `DataError` unless `path` (links followed) is a regular file: a link to /dev/zero is read forever, a
    FIFO blocks forever, /proc files lie about their size."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"{what} {show(str(path))} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode) or str(Path(path).resolve()).startswith(("/proc/", "/sys/", "/dev/")):
        raise DataError(
            f"{what} {show(str(path))} is not a regular file (a device, FIFO, socket or /proc entry, possibly behind "
            "a link); point it at a real file"
        )


def _did_you_mean(path: Path) -> str:
    """ "; did you mean X.jsonl?" when a file with a dataset suffix sits beside a path given without one."""
    for suffix in (".jsonl", ".json", ".parquet"):
        if path.suffix.lower() != suffix and path.with_name(path.name + suffix).is_file():
            return f" (no such file); did you mean {str(path) + suffix!r}?"
    return ""


def looks_local(text: str) -> bool:
    """True when `text` reads as a local path rather than a hub id: it starts with ./, ../, / or ~, a file with
    a dataset suffix sits beside it, or its first component is an existing local directory."""
    p = Path(text).expanduser()
    if text.startswith((".", "/", "~")) or _did_you_mean(p):
        return True
    first = Path(text).parts[0] if Path(text).parts else ""
    return bool(first) and Path(first).is_dir()


def _open_saved_dataset(path: Path) -> _Source:
    import datasets

    if (path / "dataset_dict.json").exists():
        kind = "DatasetDict"
    elif (path / "dataset_info.json").exists() or (path / "state.json").exists():
        kind = "dataset"
    else:
        raise DataError(
            f"{path}: directory is not a saved dataset (no dataset_dict.json, dataset_info.json or state.json)"
        )
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - any load failure is a data problem here
        raise DataError(f"{path}: cannot load the saved {kind} ({exc})") from None
    if kind == "DatasetDict":
        if not ds:
            raise DataError(f"{path}: the saved DatasetDict has no splits")
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
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


# --------------------------------------------------------------------------- field parsing
def _pick(row_or_cols: Iterable[str], names: Sequence[str], field: str, source: _Source, where: str) -> str:
    present = [n for n in names if n in row_or_cols]
    if not present:
        found = sorted(str(c) for c in row_or_cols if not str(c).startswith("__"))
        raise DataError(
            f"{source.path}{where}: missing the {field} column (expected one of {list(names)}); "
            f"columns found: {show(found)}"
        )
    return present[0]


def _parse_answer(value: Any, task: str) -> tuple[str, str]:
    """Return (answer, reasoning) from a `solution`/`ground_truth` value; raise `_BadRow` if unusable."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _BadRow(f"unusable answer {show(value)}")
    reasoning = ""
    if isinstance(value, (int, float)):
        try:
            text = repr(value) if isinstance(value, float) else str(value)
        except ValueError:  # an integer too long to print
            raise _BadRow("answer is an integer with thousands of digits") from None
    else:
        text = str(value)
        think = _THINK.findall(text)
        if think:
            reasoning = think[-1].strip()
            text = _THINK.sub("", text)
        tagged = extract_answer(text) if "<answer>" in text else None
        text = tagged if tagged is not None else text
    answer = text.strip()
    if task == "counting":
        try:
            number = float(answer)
        except ValueError:
            raise _BadRow(f"counting answer {show(answer)} is not a non-negative integer") from None
        if not math.isfinite(number) or number < 0 or not number.is_integer() or number > 1e9:
            raise _BadRow(f"counting answer {show(answer)} is not a non-negative integer (up to 10^9)")
        answer = str(int(number))
    elif not _GEOMETRY_NUMBER.search(answer):
        raise _BadRow(f"geometry answer {show(answer)} contains no number")
    return answer, reasoning


def _decode_image(value: Any, image_root: Path | None, base_dir: Path, max_pixels: int | None = None) -> Image.Image:
    """PIL image from a PIL image, an Image-feature dict, raw bytes or a path; raise `_BadRow` if bad.

    The header is checked before any pixel is decoded; images larger than `max_pixels` are shrunk
    (aspect kept) so the processor never sees more than it would keep.
    """
    if isinstance(value, Image.Image):
        image, label = value, "image"
        _check_size(image.size, label, max_pixels)
    else:
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray, memoryview)):
            data, label = bytes(value), "image bytes"
        elif isinstance(value, str) and value and "\x00" not in value and len(value) < 4096:
            rel = Path(value).expanduser()
            full = rel if rel.is_absolute() else (image_root or base_dir) / rel
            if not full.is_file():
                raise _BadRow(f"image file not found: {show(str(full))}")
            try:
                refuse_special_file(full, "image file")
            except DataError as exc:
                raise _BadRow(str(exc)) from None
            if full.stat().st_size > MAX_IMAGE_BYTES:
                raise _BadRow(f"image file {show(str(full))} is over {MAX_IMAGE_BYTES // 1_000_000} MB")
            try:
                with full.open("rb") as fh:
                    data = fh.read(MAX_IMAGE_BYTES + 1)
            except OSError as exc:
                raise _BadRow(f"image file {show(str(full))} cannot be read ({exc.strerror})") from None
            label = show(str(full))
        else:
            raise _BadRow(f"no image (value {show(value)})")
        try:
            image = Image.open(io.BytesIO(data))
            _check_size(image.size, label, max_pixels)
            if max_pixels:
                image.draft("RGB", _fit(image.size, max_pixels))  # JPEG: decode at a reduced scale directly
            image.load()
        except _BadRow:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
            raise _BadRow(f"unreadable image ({label}): {str(exc)[:200]}") from None
    image = image.convert("RGB") if image.mode != "RGB" else image
    if max_pixels and image.size[0] * image.size[1] > max_pixels:
        image = image.resize(_fit(image.size, max_pixels), Image.Resampling.BICUBIC)
    return image


def _lazy_image(value: Any, root: Path | None, base_dir: Path, max_pixels: int | None, where: str) -> Any:
    """A `LazyImage` for a path or bytes, decoded once now so a bad row fails at load; a PIL image is kept."""
    if isinstance(value, Image.Image):
        return _decode_image(value, root, base_dir, max_pixels)
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    size = _decode_image(value, root, base_dir, max_pixels).size  # raises _BadRow for a bad image
    return LazyImage(functools.partial(_decode_lazily, value, root, base_dir, max_pixels, where), size)


def _decode_lazily(value: Any, root: Path | None, base_dir: Path, max_pixels: int | None, where: str) -> Image.Image:
    try:
        return _decode_image(value, root, base_dir, max_pixels)
    except _BadRow as exc:  # the file changed since it was loaded
        raise DataError(f"{where}: {exc}") from None


def _check_size(size: tuple[int, int], label: str, max_pixels: int | None) -> None:
    """Refuse, from the header alone, images that are empty, huge or of an aspect the processor rejects."""
    w, h = size
    limit = DECODE_FACTOR * (max_pixels or DEFAULT_MAX_PIXELS)
    if w < 1 or h < 1:
        raise _BadRow(f"image ({label}) is empty ({w}x{h})")
    if w * h > limit:
        raise _BadRow(
            f"image ({label}) is {w}x{h} = {w * h} pixels, over {limit} ({DECODE_FACTOR} x model.max_pixels); "
            "shrink it before training (the model keeps at most model.max_pixels)"
        )
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise _BadRow(
            f"image ({label}) is {w}x{h}, an aspect ratio over {MAX_ASPECT}:1 that Qwen2-VL's processor "
            "refuses; crop or pad it"
        )


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` scaled down (aspect kept) to at most `max_pixels` pixels; unchanged when already small."""
    w, h = size
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    return max(1, int(w * scale)), max(1, int(h * scale))


# --------------------------------------------------------------------------- public API
def load_r1v(
    path: str | Path,
    task: str,
    image_root: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    skip_bad_rows: bool = False,
    max_pixels: int | None = None,
) -> list[Sample]:
    """Load an R1-V dataset (save_to_disk dir, .parquet, .jsonl, or a hub id `owner/name[:config][@split]`
    through `othinklab.tasks.hub`) as `Sample`s for `task`.

    `task` is "counting" or "geometry" and decides answer validation. Relative `image_path`s resolve
    against `image_root`, else the directory holding `path`. `limit` keeps a seeded random subset
    (returned in row order). Bad rows raise `DataError`, or are skipped and logged with `skip_bad_rows`.
    `max_pixels` (the model's) shrinks bigger images and sets the decode limit.
    """
    if task not in TASK_NAMES:
        raise DataError(f"unknown R1-V task {task!r}; choose one of {list(TASK_NAMES)}")
    if limit is not None and limit <= 0:
        raise DataError(f"limit must be a positive number of rows, got {limit}")
    from othinklab.tasks import hub

    if hub.is_hub_id(str(path)) and not looks_local(str(path)):  # `owner/name[:config][@split]`, not local
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
                good.append(_make_sample(row, idx, task, stem, source, root, base_dir, where, max_pixels))
            except _BadRow as exc:
                if not skip_bad_rows:
                    raise DataError(f"{path}{where}: {exc}") from None
                bad.append(f"{path.name}{where}: {exc}")
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
    max_pixels: int | None = None,
) -> Sample:
    if "__error__" in row:
        raise _BadRow(row["__error__"])
    img_col = _pick(row, IMAGE_COLS, "image", source, where)
    q_col = _pick(row, QUESTION_COLS, "question", source, where)
    a_col = _pick(row, ANSWER_COLS, "answer", source, where)
    question = row[q_col]
    if not isinstance(question, str) or not question.replace("<image>", "").strip():
        raise _BadRow(f"empty or non-text question {show(question)}")
    problem = question.replace("<image>", "").strip()
    tokens = control_tokens_in(problem)
    if tokens:
        raise _BadRow(
            f"question contains the chat-template control token(s) {show(tokens[:3])}, which would let the data "
            "rewrite the prompt; remove them from the question"
        )
    answer, reasoning = _parse_answer(row[a_col], task)
    thinking = row.get("thinking")
    if isinstance(thinking, str) and thinking.strip():
        think = _THINK.findall(thinking)
        reasoning = (think[-1] if think else thinking).strip()
    img_value = row[img_col]
    if img_value is None and img_col == "image" and row.get("image_path"):
        img_value = row["image_path"]
    try:
        image = _lazy_image(img_value, root, base_dir, max_pixels, f"{source.path}{where}")
    except _BadRow as exc:
        raise _BadRow(f"{exc} (field {show(img_col)})") from None
    return Sample(
        id=f"{task}:{stem}:{idx}",
        image=image,
        problem=problem,
        solution=f"<answer> {answer} </answer>",
        reasoning=reasoning,
        task=task,
        meta={"source": str(source.path), "row": idx},
    )
