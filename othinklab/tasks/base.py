"""The task contract: a `Sample` (one image + question + answer) and a `Task` that makes them. Synthetic
generators and R1-V loaders both produce `Sample`s, so nothing downstream cares where one came from."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from othinklab.errors import ConfigError, DataError

PROMPT_SUFFIX = " Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags."
"""R1-V's instruction appended to every question (docs/paper.md, Reward)."""
PROMPTS = {
    "think": PROMPT_SUFFIX,
    "direct": " Output only the final answer (number) in <answer> </answer> tags, without any reasoning.",
}
"""Instruction appended to the question, by `task.prompt`: `think` is R1-V's (the paper's), `direct` asks
for the answer alone. Both keep the `<answer>` tags so the same scorer reads either."""
CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,40}\|>")
"""The shape of Qwen2-VL's chat-template control tokens (`<|im_start|>`, `<|image_pad|>`, ...). One inside
a question would be tokenized as the real token, letting data end the user turn or fake an image slot."""


def control_tokens_in(text: str) -> list[str]:
    """The chat-template control tokens found in `text` (empty when it is safe to put in a prompt)."""
    return CONTROL_TOKEN.findall(text) if "<|" in text else []


class LazyImage:
    """An image decoded from its file or bytes on each read of `Sample.image`, never kept decoded: a 100k-row
    dataset decoded up front held 5.75 GB of pixels at 112 px; paths or compressed bytes are a fraction."""

    def __init__(self, load: Callable[[], Image.Image], size: tuple[int, int] | None = None) -> None:
        self.load, self.size = load, size

    def __repr__(self) -> str:
        return f"LazyImage(size={self.size})"


@dataclass
class Sample:
    """One task item in the R1-V shape: `solution` is R1-V's `<answer> 3 </answer>` form; `reasoning` is a
    short correct explanation, the supervised `<think>` target (empty for real data that has none)."""

    id: str
    image: Image.Image
    problem: str
    solution: str
    reasoning: str = ""
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    prompt: str = "think"
    """Which instruction (`PROMPTS` key) follows the question in the prompt."""

    def __post_init__(self) -> None:
        # Every sample, whatever made it (R1-V file, hub, synthetic, a notebook), passes here.
        for name in ("problem", "solution", "reasoning"):
            value = getattr(self, name)
            found = control_tokens_in(value) if isinstance(value, str) else []
            if found:
                raise DataError(
                    f"sample {self.id[:120]!r}: its {name} contains the chat-template control token(s) "
                    f"{', '.join(found[:3])[:120]}, which would let the data rewrite the prompt; remove them"
                )

    @property
    def answer(self) -> str:
        """The bare answer string inside `<answer>…</answer>` (or the whole solution)."""
        from othinklab.rewards import extract_answer

        got = extract_answer(self.solution)
        return (got if got is not None else self.solution).strip()

    @property
    def prompt_text(self) -> str:
        """The user-turn text: the question followed by the format instruction (R1-V's by default)."""
        return self.problem + PROMPTS[self.prompt]

    def target(self) -> str:
        """The supervised completion: `<think>reasoning</think><answer>answer</answer>`."""
        return f"<think>{self.reasoning}</think><answer>{self.answer}</answer>"


def _get_image(self: Sample) -> Image.Image:
    value = self.__dict__["_image"]
    return value.load() if isinstance(value, LazyImage) else value


def _set_image(self: Sample, value: Image.Image | LazyImage) -> None:
    self.__dict__["_image"] = value


Sample.image = property(_get_image, _set_image, doc="The PIL image (a `LazyImage` is decoded on each read).")  # type: ignore[assignment]


def image_source(sample: Sample) -> Image.Image | LazyImage:
    """What `sample.image` is read from, without decoding it (for copies that keep it lazy)."""
    return sample.__dict__["_image"]


def with_prompt(samples: list[Sample], prompt: str) -> list[Sample]:
    """Copies of `samples` asking for `prompt`'s format (the originals, possibly cached, stay as they are)."""
    if prompt not in PROMPTS:
        raise ConfigError(f"task.prompt={prompt!r} is unknown; choose one of {', '.join(PROMPTS)}")
    return [s if s.prompt == prompt else dataclasses.replace(s, prompt=prompt, image=image_source(s)) for s in samples]


class Task(Protocol):
    """Anything with a name that can produce seeded samples for a split."""

    name: str
    splits: tuple[str, ...]

    def samples(self, n: int, split: str = "train", seed: int = 0) -> list[Sample]: ...
