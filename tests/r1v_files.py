"""Test helper: write synthetic samples as an R1-V test file (SuperCLEVR/GeoQA layout) with PNG images."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from othinklab.rewards import extract_answer
from othinklab.tasks import Sample


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
            tagged = extract_answer(sample.solution)
            answer: Any = (tagged if tagged is not None else sample.solution).strip()
            if sample.task == "counting" and answer.isdigit():
                answer = int(answer)
            row = {"image_path": rel, "question": sample.problem, "ground_truth": answer}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return out_path
