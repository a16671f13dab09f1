"""Synthetic CLEVR-like counting: coloured shapes on a grid, "How many ... are there?".

Simplified versus CLEVR / SuperCLEVR: flat 2-D shapes, each in its own cell of a grid whose cell equals
one merged visual token of Qwen2-VL (28x28 pixels), because a ~1M-parameter vision tower measurably
fails to count freely placed objects (docs/design.md). The `ood` split shifts object size, colour shade,
background and question mix, standing in for SuperCLEVR-200.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from othinklab.errors import ConfigError
from othinklab.tasks.base import Sample

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
SPLIT_CODES = {"train": 0, "test": 1, "ood": 2, "val": 3}
"""`val` is drawn like `ood` (the eval split) from its own seeds: settings are chosen on it, never on `ood`."""
TOTAL_QUESTION = "How many different items are there in the image?"


@dataclass(frozen=True)
class CountingTask:
    """Seeded generator of counting samples; every knob is a constructor argument."""

    image_size: int = 112
    cell: int = 28
    min_objects: int = 1
    max_objects: int = 9
    colour_question_frac: float = 0.5
    name: str = "counting"
    splits: tuple[str, ...] = ("train", "test", "ood", "val")

    def __post_init__(self) -> None:
        cells = (self.image_size // self.cell) ** 2
        if not 1 <= self.min_objects <= self.max_objects <= cells:
            raise ConfigError(
                f"counting task: need 1 <= min_objects <= max_objects <= {cells} grid cells, "
                f"got min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if not 0.0 <= self.colour_question_frac <= 1.0:
            raise ConfigError(f"counting task: colour_question_frac must be in [0, 1], got {self.colour_question_frac}")

    def samples(self, n: int, split: str = "train", seed: int = 0) -> list[Sample]:
        """`n` samples of `split`; sample i depends only on (split, seed, i), so prefixes are stable."""
        if split not in SPLIT_CODES:
            raise ConfigError(f"counting task: unknown split {split!r}; choose one of {sorted(SPLIT_CODES)}")
        return [self._sample(split, seed, i) for i in range(n)]

    def _sample(self, split: str, seed: int, i: int) -> Sample:
        rng = np.random.default_rng([SPLIT_CODES[split], seed, i, 7])
        ood = split in ("ood", "val")
        grid = self.image_size // self.cell
        count = int(rng.integers(self.min_objects, self.max_objects + 1))
        cells = rng.choice(grid * grid, size=count, replace=False)
        names = list(COLOURS)
        objects = [(names[int(rng.integers(len(names)))], SHAPES[int(rng.integers(len(SHAPES)))]) for _ in cells]
        bg = (200, 200, 200) if ood else (235, 235, 235)
        img = Image.new("RGB", (self.image_size, self.image_size), bg)
        draw = ImageDraw.Draw(img)
        lo, hi = (0.45, 0.6) if ood else (0.6, 0.85)
        for cell, (colour, shape) in zip(cells, objects):
            r, c = divmod(int(cell), grid)
            size = self.cell * float(rng.uniform(lo, hi))
            cx = c * self.cell + self.cell / 2 + float(rng.uniform(-1.5, 1.5))
            cy = r * self.cell + self.cell / 2 + float(rng.uniform(-1.5, 1.5))
            rgb = np.array(COLOURS[colour], dtype=float)
            if ood:  # shade shift: darker or lighter version of the same colour name
                rgb = np.clip(rgb * float(rng.uniform(0.7, 1.15)), 0, 255)
            _draw_shape(draw, shape, cx, cy, size, tuple(int(v) for v in rgb))
        tally = {name: sum(1 for col, _ in objects if col == name) for name in names}
        present = [name for name in names if tally[name]]
        colour_q = (not ood) and rng.random() < self.colour_question_frac
        if colour_q:
            target = names[int(rng.integers(len(names)))]
            answer = tally[target]
            problem = f"How many {target} objects are there?"
            reasoning = f"I look for {target} objects. There are {answer} {target} objects."
        else:
            answer = count
            problem = TOTAL_QUESTION
            parts = ", ".join(f"{tally[name]} {name}" for name in present)
            reasoning = f"I count the objects: {parts}. In total there are {count}."
        return Sample(
            id=f"counting:{split}:{seed}:{i}",
            image=img,
            problem=problem,
            solution=f"<answer> {answer} </answer>",
            reasoning=reasoning,
            task="counting",
            meta={"count": count, "colour_question": bool(colour_q), "split": split},
        )


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, rgb: tuple) -> None:
    h = size / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=rgb)
    elif shape == "square":
        draw.rectangle([cx - h * 0.85, cy - h * 0.85, cx + h * 0.85, cy + h * 0.85], fill=rgb)
    else:
        draw.polygon([(cx, cy - h), (cx - h, cy + h * 0.8), (cx + h, cy + h * 0.8)], fill=rgb)
