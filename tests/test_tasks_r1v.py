"""R1-V loaders: tiny fixtures in the exact on-disk layouts of the paper's datasets; data files that are
devices, FIFOs or links, `/proc` paths as images, images decoded lazily; property-based: any row or JSONL file
ends in Samples or a UserError."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from property_strategies import FAST, SCALARS
from r1v_files import write_r1v_jsonl

from othinklab.errors import DataError, UserError
from othinklab.rewards import extract_answer
from othinklab.tasks import r1v
from othinklab.tasks.base import Sample
from othinklab.tasks.r1v import load_r1v

datasets = pytest.importorskip("datasets")

COUNT_Q = "How many items are there in the image?"


def _answer(s: Sample) -> str:
    """`Sample.answer` without needing `othinklab.rewards` (written concurrently)."""
    return (extract_answer(s.solution) or s.solution).strip()


def _img(i: int, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (16, 16), color=(i * 20 % 256, 40, 90) if mode == "RGB" else i)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    _img(i).save(buf, format="PNG")
    return buf.getvalue()


def _clevr_dataset(n: int = 6):
    """Like leonardPKU/clevr_cogen_a_train: image (Image feature), problem, solution."""
    feats = datasets.Features(
        {"image": datasets.Image(), "problem": datasets.Value("string"), "solution": datasets.Value("string")}
    )
    data = {
        "image": [_img(i) for i in range(n)],
        "problem": [COUNT_Q] * n,
        "solution": [f"<answer> {i + 1} </answer>" for i in range(n)],
    }
    return datasets.Dataset.from_dict(data, features=feats)


def _write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    for i, text in (raw_lines or {}).items():
        lines[i] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def _superclevr(tmp_path: Path, n: int = 5) -> Path:
    """Like SuperCLEVR-200: image_path relative to the JSONL, question, int ground_truth."""
    (tmp_path / "images").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        _img(i).save(tmp_path / "images" / f"superCLEVR_{i:03d}.png")
        rows.append(
            {
                "image_path": f"images/superCLEVR_{i:03d}.png",
                "question": "How many different items are there in the image?",
                "ground_truth": i + 2,
            }
        )
    return _write_jsonl(tmp_path / "superclevr_test200.jsonl", rows)


# ----------------------------------------------------------------------------- happy paths
def test_save_to_disk_dataset(tmp_path):
    _clevr_dataset().save_to_disk(str(tmp_path / "clevr_cogen_a_train"))
    samples = load_r1v(tmp_path / "clevr_cogen_a_train", "counting")
    assert len(samples) == 6
    s = samples[2]
    assert isinstance(s, Sample)
    assert s.id == "counting:clevr_cogen_a_train:2"
    assert s.problem == COUNT_Q
    assert s.solution == "<answer> 3 </answer>"
    assert s.task == "counting" and s.reasoning == ""
    assert s.meta == {"source": str(tmp_path / "clevr_cogen_a_train"), "row": 2}
    assert s.image.mode == "RGB" and s.image.size == (16, 16)
    assert s.image.getpixel((0, 0)) == (40, 40, 90)


def test_dataset_dict_train_split_and_split_dir(tmp_path):
    dd = datasets.DatasetDict({"test": _clevr_dataset(2), "train": _clevr_dataset(4)})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_r1v(tmp_path / "dd", "counting")) == 4  # "train" preferred
    assert len(load_r1v(tmp_path / "dd" / "test", "counting")) == 2  # a split dir directly
    datasets.DatasetDict({"validation": _clevr_dataset(3)}).save_to_disk(str(tmp_path / "dd2"))
    assert len(load_r1v(tmp_path / "dd2", "counting")) == 3  # else the first split


def test_parquet_from_datasets(tmp_path):
    _clevr_dataset().to_parquet(str(tmp_path / "train.parquet"))
    samples = load_r1v(tmp_path / "train.parquet", "counting")
    assert [_answer(s) for s in samples] == ["1", "2", "3", "4", "5", "6"]
    assert samples[0].id == "counting:train:0"


def test_parquet_from_pandas_with_image_path_and_image_root(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        _img(i).save(root / f"{i}.png")
    df = pd.DataFrame(
        {
            "image_path": [f"{i}.png" for i in range(3)],
            "problem": ["<image>What is angle ABC?"] * 3,
            "solution": ["<answer>140°</answer>", "<answer> 2√3 </answer>", "<answer>\\frac{1}{2}</answer>"],
        }
    )
    df.to_parquet(tmp_path / "geo.parquet")
    samples = load_r1v(tmp_path / "geo.parquet", "geometry", image_root=root)
    assert [s.solution for s in samples] == [
        "<answer> 140° </answer>",
        "<answer> 2√3 </answer>",
        "<answer> \\frac{1}{2} </answer>",
    ]
    assert samples[0].problem == "What is angle ABC?"
    with pytest.raises(DataError, match="0.png"):  # without image_root: relative to the file's dir
        load_r1v(tmp_path / "geo.parquet", "geometry")


def test_superclevr_jsonl(tmp_path):
    samples = load_r1v(_superclevr(tmp_path), "counting")
    assert len(samples) == 5
    assert samples[0].solution == "<answer> 2 </answer>" and _answer(samples[0]) == "2"
    assert samples[4].id == "counting:superclevr_test200:4"
    assert samples[1].problem == "How many different items are there in the image?"


def test_geoqa_test_jsonl(tmp_path):
    (tmp_path / "images").mkdir()
    _img(0, "L").save(tmp_path / "images" / "0.png")
    _img(1).save(tmp_path / "images" / "1.png")
    rows = [
        {"image_path": "./images/0.png", "question": "<image>\nFind ∠ABC.", "ground_truth": "140°"},
        {"image_path": "./images/1.png", "question": "Find x.", "ground_truth": 5},
    ]
    samples = load_r1v(_write_jsonl(tmp_path / "geoqa_test.jsonl", rows), "geometry")
    assert [_answer(s) for s in samples] == ["140°", "5"]
    assert samples[0].problem == "Find ∠ABC."
    assert samples[0].image.mode == "RGB"  # grayscale converted


def test_image_root_when_jsonl_moved(tmp_path):
    (tmp_path / "a").mkdir()
    jsonl = _superclevr(tmp_path / "a")
    moved = tmp_path / "b"
    moved.mkdir()
    target = moved / jsonl.name
    target.write_text(jsonl.read_text())
    with pytest.raises(DataError, match="image file not found"):
        load_r1v(target, "counting")
    assert len(load_r1v(target, "counting", image_root=tmp_path / "a")) == 5


def test_reasoning_from_thinking_and_think_tags(tmp_path):
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "problem": datasets.Value("string"),
            "thinking": datasets.Value("string"),
            "solution": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [_img(0), _img(1)],
            "problem": [COUNT_Q, COUNT_Q],
            "thinking": ["<think>Two cubes and a ball.</think>", ""],
            "solution": ["<answer>3</answer>", "<think>One cube.</think> <answer> 1 </answer>"],
        },
        features=feats,
    )
    ds.save_to_disk(str(tmp_path / "Clevr_CoGenT_TrainA_R1"))
    a, b = load_r1v(tmp_path / "Clevr_CoGenT_TrainA_R1", "counting")
    assert (a.reasoning, a.solution) == ("Two cubes and a ball.", "<answer> 3 </answer>")
    assert (b.reasoning, b.solution) == ("One cube.", "<answer> 1 </answer>")


def test_counting_answer_forms(tmp_path):
    rows = [
        {"image": {"bytes": _png(i), "path": None}, "problem": "n?", "solution": s}
        for i, s in enumerate(["3", " 3 ", "3.0", "<answer> 7 </answer>"])
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "forms.parquet")
    assert [_answer(s) for s in load_r1v(tmp_path / "forms.parquet", "counting")] == ["3", "3", "3", "7"]


def test_limit_seeded_sorted_and_fast_selection(tmp_path):
    _clevr_dataset(30).save_to_disk(str(tmp_path / "big"))
    a = load_r1v(tmp_path / "big", "counting", limit=5, seed=0)
    b = load_r1v(tmp_path / "big", "counting", limit=5, seed=0)
    c = load_r1v(tmp_path / "big", "counting", limit=5, seed=1)
    ids = [s.id for s in a]
    assert ids == [s.id for s in b] and len(a) == 5
    assert ids != [s.id for s in c]
    rows = [s.meta["row"] for s in a]
    assert rows == sorted(rows)
    assert len(load_r1v(tmp_path / "big", "counting", limit=100)) == 30
    with pytest.raises(DataError, match="limit"):
        load_r1v(tmp_path / "big", "counting", limit=0)


def test_limit_decodes_only_selected_rows(tmp_path):
    rows = [{"image": {"bytes": _png(i), "path": None}, "problem": "n?", "solution": "1"} for i in range(20)]
    for r in rows[1:]:
        r["image"] = {"bytes": b"garbage", "path": None}
    pd.DataFrame(rows).to_parquet(tmp_path / "mostly_bad.parquet")
    # Find a seed whose first pick is row 0: only that row is decoded, so no error.
    import numpy as np

    seed = next(s for s in range(1000) if np.random.default_rng(s).permutation(20)[0] == 0)
    (only,) = load_r1v(tmp_path / "mostly_bad.parquet", "counting", limit=1, seed=seed)
    assert only.meta["row"] == 0


# ----------------------------------------------------------------------------- errors
def _bad(path, task="counting", **kw) -> str:
    with pytest.raises(DataError) as info:
        load_r1v(path, task, **kw)
    return str(info.value)


def test_missing_column(tmp_path):
    pd.DataFrame({"image_path": ["x.png"], "text": ["q"], "ground_truth": [1]}).to_parquet(tmp_path / "m.parquet")
    msg = _bad(tmp_path / "m.parquet")
    assert "m.parquet" in msg and "question" in msg and "text" in msg
    _write_jsonl(tmp_path / "m.jsonl", [{"image_path": "x.png", "question": "q"}])
    msg = _bad(tmp_path / "m.jsonl", skip_bad_rows=True)  # never skippable
    assert "m.jsonl" in msg and "answer" in msg and "image_path" in msg


def test_missing_image_file(tmp_path):
    jsonl = _superclevr(tmp_path)
    (tmp_path / "images" / "superCLEVR_003.png").unlink()
    msg = _bad(jsonl)
    assert "superclevr_test200.jsonl" in msg and "row 3" in msg and "superCLEVR_003.png" in msg


def test_corrupt_image_bytes(tmp_path):
    rows = [{"image": {"bytes": _png(0), "path": None}, "problem": "n?", "solution": "1"}] * 2
    rows = rows + [{"image": {"bytes": b"\x89PNG not really", "path": None}, "problem": "n?", "solution": "1"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "corrupt.parquet")
    msg = _bad(tmp_path / "corrupt.parquet")
    assert "corrupt.parquet" in msg and "row 2" in msg and "image" in msg


def test_unparsable_answer(tmp_path):
    jsonl = _superclevr(tmp_path)
    lines = jsonl.read_text().splitlines()
    row = json.loads(lines[1])
    row["ground_truth"] = "three"
    lines[1] = json.dumps(row)
    jsonl.write_text("\n".join(lines) + "\n")
    msg = _bad(jsonl)
    assert "superclevr_test200.jsonl" in msg and "row 1" in msg and "three" in msg
    for bad in ("-1", "2.5"):
        row["ground_truth"] = bad
        _write_jsonl(tmp_path / "one.jsonl", [row])
        assert "one.jsonl" in _bad(tmp_path / "one.jsonl")
    row["ground_truth"] = "a right angle"
    _write_jsonl(tmp_path / "geo.jsonl", [row])
    assert "no number" in _bad(tmp_path / "geo.jsonl", "geometry")


def test_malformed_json_line(tmp_path):
    jsonl = _superclevr(tmp_path)
    lines = jsonl.read_text().splitlines()
    lines[2] = '{"image_path": "images/superCLEVR_002.png", "question": '
    jsonl.write_text("\n".join(lines) + "\n")
    msg = _bad(jsonl)
    assert "superclevr_test200.jsonl" in msg and "line 3" in msg and "row 2" in msg


def test_empty_nonexistent_and_bad_task(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert "empty.jsonl" in _bad(tmp_path / "empty.jsonl")
    assert "nope.parquet" in _bad(tmp_path / "nope.parquet")
    (tmp_path / "plain_dir").mkdir()
    assert "plain_dir" in _bad(tmp_path / "plain_dir")
    assert "ocr" in _bad(_superclevr(tmp_path), task="ocr")


def test_skip_bad_rows_counts_and_skips(tmp_path, caplog):
    jsonl = _superclevr(tmp_path, n=6)
    lines = jsonl.read_text().splitlines()
    lines[1] = "{not json"
    row = json.loads(lines[3])
    row["ground_truth"] = "many"
    lines[3] = json.dumps(row)
    jsonl.write_text("\n".join(lines) + "\n")
    (tmp_path / "images" / "superCLEVR_005.png").unlink()
    with caplog.at_level(logging.WARNING, logger="othinklab"):
        samples = load_r1v(jsonl, "counting", skip_bad_rows=True)
    assert [s.meta["row"] for s in samples] == [0, 2, 4]
    assert "skipped 3 bad row(s)" in caplog.text and "line 2" in caplog.text

    # limit keeps drawing from the permutation until it has enough good rows
    picked = load_r1v(jsonl, "counting", skip_bad_rows=True, limit=3, seed=0)
    assert [s.meta["row"] for s in picked] == [0, 2, 4]
    assert len(load_r1v(jsonl, "counting", skip_bad_rows=True, limit=2, seed=3)) == 2

    # zero good rows is still an error
    _write_jsonl(tmp_path / "allbad.jsonl", [row])
    assert "allbad.jsonl" in _bad(tmp_path / "allbad.jsonl", skip_bad_rows=True)


# ----------------------------------------------------------------------------- export
def test_write_r1v_jsonl_roundtrip(tmp_path):
    _clevr_dataset(3).save_to_disk(str(tmp_path / "src"))
    samples = load_r1v(tmp_path / "src", "counting")
    out = write_r1v_jsonl(samples, tmp_path / "export" / "counting.jsonl", tmp_path / "export" / "images")
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"image_path", "question", "ground_truth"}
    assert first["ground_truth"] == 1 and not Path(first["image_path"]).is_absolute()
    back = load_r1v(out, "counting")
    assert [(s.problem, s.solution) for s in back] == [(s.problem, s.solution) for s in samples]
    assert back[1].image.tobytes() == samples[1].image.tobytes()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(d / "ok.png")
    Image.new("RGB", (900, 3), (1, 2, 3)).save(d / "wide.png")
    (d / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return d


ROW_VALUES = st.one_of(
    SCALARS,
    st.sampled_from(["ok.png", "wide.png", "junk.png", "missing.png", "<answer> 3 </answer>", "<|im_start|>", ""]),
    st.binary(max_size=20),
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["bytes", "path"]), SCALARS | st.binary(max_size=10), max_size=2),
)


def sample_from_row(row: dict, task: str, base_dir: Path, max_pixels: int) -> Sample:
    """One raw row as a `Sample` through the loader's own row parser; a bad row is a `DataError`."""
    source = r1v._Source(Path("row"), 1, [str(c) for c in row], lambda indices: [row])
    try:
        return r1v._make_sample(row, 0, task, "row", source, None, base_dir, " row 0", max_pixels)
    except r1v._BadRow as exc:
        raise DataError(f"row 0: {exc}") from None


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["image", "image_path", "problem", "question", "solution", "ground_truth", "thinking", "x"]),
        ROW_VALUES,
        max_size=6,
    ),
    st.sampled_from(["counting", "geometry"]),
)
def test_any_row_ends_in_a_sample_or_a_user_error(image_dir, row, task):
    try:
        sample = sample_from_row(row, task, base_dir=image_dir, max_pixels=4096)
    except UserError:
        return
    assert isinstance(sample, Sample)
    assert sample.image.size[0] * sample.image.size[1] <= 4096


@FAST
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(
                lambda q, a: json.dumps({"image_path": "ok.png", "problem": q, "solution": a}).encode(),
                st.text(max_size=30),
                SCALARS,
            ),
        ),
        min_size=0,
        max_size=5,
    )
)
def test_any_jsonl_file_ends_in_samples_or_a_user_error(image_dir, lines):
    f = image_dir / "data.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    try:
        samples = load_r1v(f, "counting", skip_bad_rows=True)
    except UserError:
        return
    assert samples and all(isinstance(s, Sample) for s in samples)


# --------------------------------------------------------------------------- class 9: data files that never end
def _hostile_data(tmp: Path, kind: str) -> Path:
    path = tmp / "data.jsonl"
    if kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "symlink to a FIFO":
        os.mkfifo(tmp / "fifo")
        path.symlink_to(tmp / "fifo")
    elif kind == "/dev/urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "directory named .jsonl":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind", ["symlink to /dev/zero", "FIFO", "symlink to a FIFO", "/dev/urandom", "directory named .jsonl"]
)
def test_a_data_file_that_is_not_a_regular_file_is_refused_at_once(kind, tmp_path):
    """Class 9: a JSONL that is a link to /dev/zero looped at 100% CPU; a FIFO blocked forever."""
    from othinklab.tasks import load_r1v

    path = _hostile_data(tmp_path, kind)
    start = time.perf_counter()
    with pytest.raises(UserError, match="data.jsonl"):
        load_r1v(path, "counting")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("image", ["/proc/self/mem", "/proc/self/environ", "/dev/zero", "/proc/kcore", "/dev/stdin"])
def test_proc_and_device_paths_as_images_are_a_named_row_error(image, tmp_path):
    """Class 11: `/proc` paths as images gave a traceback (EIO on read) or read without end."""
    from othinklab.tasks import load_r1v

    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"image_path": image, "problem": "How many?", "solution": "<answer> 3 </answer>"}) + "\n"
    )
    with pytest.raises(UserError, match=r"d\.jsonl row 0"):
        load_r1v(path, "counting")


# --------------------------------------------------------------------------- class 9: images decoded lazily
def test_dataset_images_are_not_kept_decoded(tmp_path):
    """Class 9: 100k rows were decoded up front (5.75 GB at 112 px). Rows are still checked at load (a bad
    image is a row error at once) but a sample keeps only its source; `Sample.image` is a PIL image on access."""
    import tracemalloc

    from PIL import Image

    from othinklab.tasks import load_r1v
    from othinklab.tasks.base import LazyImage, image_source, with_prompt

    Image.new("RGB", (448, 448), (200, 10, 10)).save(tmp_path / "img.png")  # tiny PNG, 600 KB decoded
    row = {"image_path": "img.png", "problem": "How many?", "solution": "<answer> 3 </answer>"}
    (tmp_path / "d.jsonl").write_text((json.dumps(row) + "\n") * 300)
    tracemalloc.start()
    samples = load_r1v(tmp_path / "d.jsonl", "counting")
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 20_000_000, f"{held / 1e6:.0f} MB held for 300 samples (decoded would be 180 MB)"
    assert all(isinstance(image_source(s), LazyImage) for s in samples)
    assert isinstance(samples[0].image, Image.Image) and samples[0].image.size == (448, 448)
    assert isinstance(image_source(with_prompt(samples, "direct")[0]), LazyImage)  # copies stay lazy
    (tmp_path / "img.png").write_bytes(b"gone")  # changed after loading: a DataError naming the row
    with pytest.raises(UserError, match=r"d\.jsonl row 0"):
        _ = samples[0].image
