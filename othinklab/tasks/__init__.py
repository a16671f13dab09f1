"""Tasks: the `Sample` contract, a registry of synthetic generators, and R1-V file loaders."""

from __future__ import annotations

from typing import Any

from othinklab.errors import ConfigError
from othinklab.tasks.base import PROMPT_SUFFIX, PROMPTS, Sample, Task, with_prompt
from othinklab.tasks.counting import CountingTask
from othinklab.tasks.geometry import GeometryTask
from othinklab.tasks.r1v import load_r1v

TASKS: dict[str, type] = {"counting": CountingTask, "geometry": GeometryTask}
EVAL_SPLITS = {"counting": "ood", "geometry": "test"}
"""The paper's evaluation split per task: SuperCLEVR-like OOD counting, GeoQA-like held-out geometry."""


def make_task(name: str, **params: Any) -> Task:
    """Build a registered task by name; unknown names or knobs raise `ConfigError` naming them."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    try:
        return TASKS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"task {name!r}: bad parameter ({exc})") from None


__all__ = ["EVAL_SPLITS", "PROMPT_SUFFIX", "PROMPTS", "Sample", "Task", "TASKS", "make_task", "load_r1v", "with_prompt"]
