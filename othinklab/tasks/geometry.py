"""Synthetic GeoQA-like geometry: a figure fixes which rule applies, the question gives the numbers.

GeoQA questions state their numbers in text and the figure shows the configuration; we keep exactly
that split, so a small model must *read the figure* to pick the rule (triangle sum, exterior angle,
supplementary, complementary, vertical angles, isosceles apex, midpoint, square perimeter) and then
do the arithmetic. Reading angle sizes off pixels is not required: a ~1M-parameter vision tower
measurably cannot (docs/design.md). Answers are numbers (degrees or lengths), as in GeoQA's test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from othinklab.errors import ConfigError
from othinklab.tasks.base import Sample

RULES = (
    "triangle_sum",
    "exterior_angle",
    "supplementary",
    "complementary",
    "vertical",
    "isosceles_apex",
    "midpoint",
    "square_perimeter",
)
SPLIT_CODES = {"train": 0, "test": 1, "val": 2}
"""`val` is for choosing settings; `test` is the eval split and is never tuned on."""


@dataclass(frozen=True)
class GeometryTask:
    """Seeded generator of geometry samples; `step` is the grid the given numbers sit on (degrees)."""

    image_size: int = 112
    step: int = 10
    rules: tuple[str, ...] = RULES
    name: str = "geometry"
    splits: tuple[str, ...] = ("train", "test", "val")

    def __post_init__(self) -> None:
        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            raise ConfigError(f"geometry task: unknown rules {bad}; choose from {list(RULES)}")
        if self.step not in (5, 10):
            raise ConfigError(f"geometry task: step must be 5 or 10 (degrees), got {self.step}")

    def samples(self, n: int, split: str = "train", seed: int = 0) -> list[Sample]:
        """`n` samples of `split`; sample i depends only on (split, seed, i)."""
        if split not in SPLIT_CODES:
            raise ConfigError(f"geometry task: unknown split {split!r}; choose one of {sorted(SPLIT_CODES)}")
        return [self._sample(split, seed, i) for i in range(n)]

    def _sample(self, split: str, seed: int, i: int) -> Sample:
        rng = np.random.default_rng([SPLIT_CODES[split], seed, i, 11])
        rule = self.rules[int(rng.integers(len(self.rules)))]
        s = self.step

        def pick(lo: int, hi: int) -> int:
            return int(rng.choice(np.arange(lo, hi + 1, s)))

        if rule == "triangle_sum":
            a = pick(20, 80)
            b = pick(20, min(80, 150 - a))
            x, given, why = 180 - a - b, [a, b], f"The figure is a triangle, so x = 180 - {a} - {b} = {180 - a - b}."
        elif rule == "exterior_angle":
            a, b = pick(20, 70), pick(20, 70)
            x, given, why = a + b, [a, b], f"x is an exterior angle of the triangle, so x = {a} + {b} = {a + b}."
        elif rule == "supplementary":
            a = pick(20, 160)
            x, given, why = 180 - a, [a], f"The angles lie on a straight line, so x = 180 - {a} = {180 - a}."
        elif rule == "complementary":
            a = pick(10, 80)
            x, given, why = 90 - a, [a], f"The angles form a right angle, so x = 90 - {a} = {90 - a}."
        elif rule == "vertical":
            a = pick(20, 160)
            x, given, why = a, [a], f"x and the known angle are vertical angles, so x = {a}."
        elif rule == "isosceles_apex":
            a = pick(20, 80)
            x, given, why = 180 - 2 * a, [a], f"The triangle is isosceles, so x = 180 - 2 * {a} = {180 - 2 * a}."
        elif rule == "midpoint":
            a = 2 * int(rng.integers(1, 11))
            x, given, why = a // 2, [a], f"M is the midpoint of the segment, so x = {a} / 2 = {a // 2}."
        else:  # square_perimeter
            a = int(rng.integers(1, 11))
            x, given, why = 4 * a, [a], f"The figure is a square, so x = 4 * {a} = {4 * a}."
        if rule in ("midpoint", "square_perimeter"):
            problem = f"As shown in the figure, the known length is {given[0]}. Find the length x."
        elif len(given) == 2:
            problem = f"As shown in the figure, the known angles are {given[0]}° and {given[1]}°. Find the angle x in degrees."
        else:
            problem = f"As shown in the figure, the known angle is {given[0]}°. Find the angle x in degrees."
        return Sample(
            id=f"geometry:{split}:{seed}:{i}",
            image=_render(rule, self.image_size, rng),
            problem=problem,
            solution=f"<answer> {x} </answer>",
            reasoning=why,
            task="geometry",
            meta={"rule": rule, "given": given, "split": split},
        )


def _render(rule: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the figure for `rule` with small random jitter; thick strokes so 14x14 patches see them."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    k = size / 112.0

    def p(x: float, y: float) -> tuple[float, float]:
        return ((x + float(rng.uniform(-3, 3))) * k, (y + float(rng.uniform(-3, 3))) * k)

    ink, w = (0, 0, 0), max(2, int(3 * k))
    if rule in ("triangle_sum", "isosceles_apex", "exterior_angle"):
        apex_x = 56 if rule == "isosceles_apex" else float(rng.uniform(35, 75))
        a, b, c = p(15, 90), p(97 if rule != "exterior_angle" else 75, 90), p(apex_x, 20)
        d.line([a, b, c, a], fill=ink, width=w)
        if rule == "exterior_angle":
            d.line([b, (108 * k, b[1])], fill=ink, width=w)
        if rule == "isosceles_apex":  # tick marks on the equal sides
            for q in (a, b):
                mx, my = (q[0] + c[0]) / 2, (q[1] + c[1]) / 2
                d.line([(mx - 4 * k, my), (mx + 4 * k, my)], fill=ink, width=w)
    elif rule == "supplementary":
        d.line([p(8, 80), p(104, 80)], fill=ink, width=w)
        d.line([p(56, 80), p(float(rng.uniform(25, 90)), 18)], fill=ink, width=w)
    elif rule == "complementary":
        o = p(20, 92)
        d.line([o, (o[0], 10 * k)], fill=ink, width=w)
        d.line([o, (104 * k, o[1])], fill=ink, width=w)
        d.rectangle([o[0], o[1] - 12 * k, o[0] + 12 * k, o[1]], outline=ink, width=w)
        d.line([o, p(95, 30)], fill=ink, width=w)
    elif rule == "vertical":
        d.line([p(12, 20), p(100, 92)], fill=ink, width=w)
        d.line([p(12, 92), p(100, 20)], fill=ink, width=w)
    elif rule == "midpoint":
        y = 56 + float(rng.uniform(-10, 10))
        d.line([(10 * k, y * k), (102 * k, y * k)], fill=ink, width=w)
        for x in (10, 56, 102):
            d.ellipse([(x - 5) * k, (y - 5) * k, (x + 5) * k, (y + 5) * k], fill=ink)
    else:  # square
        s0 = float(rng.uniform(16, 26))
        d.rectangle([s0 * k, s0 * k, (112 - s0) * k, (112 - s0) * k], outline=ink, width=w + 1)
    return img
