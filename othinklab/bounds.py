"""Bounds on untrusted input: YAML that cannot explode, short reprs in messages, safe path pieces.

Why: a 329-byte YAML file of nested aliases ("billion laughs") expands to billions of list items the
moment anything walks or prints it, and one pasted megabyte in a config value would fill the terminal
with the error that names it. Config files are small and hand-written, so generous fixed limits cost a
real user nothing and turn each of these into a one-line `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from othinklab.errors import ConfigError

MAX_YAML_BYTES = 1_000_000
"""Largest config file read (bytes); real ones are a few hundred."""
MAX_YAML_ALIASES = 20
"""Most `*alias` references one YAML document may use."""
MAX_YAML_DEPTH = 32
"""Deepest nesting of mappings/lists one YAML document may have (a config needs 2)."""
MAX_SHOWN = 200
"""Characters of a user's value quoted in an error message."""
MAX_NAME = 200
"""Longest run name (one path component; file systems allow 255 bytes)."""
MAX_PATH = 4096
"""Longest path accepted in a config field."""
MAX_INT = 2**53
"""Largest integer a config field may hold (a 100-digit step count overflows torch, numpy and JSON readers)."""


class YamlTooComplex(ConfigError):
    """A YAML document over the alias or nesting limit, or with a key written twice in one mapping."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a cap on alias references and nesting depth."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise YamlTooComplex(
                    f"more than {MAX_YAML_ALIASES} *alias references (at line {mark.line + 1}); a config needs "
                    "none, and nested aliases can expand to billions of items. Write the values out"
                )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlTooComplex(
                    f"nested more than {MAX_YAML_DEPTH} levels deep (at line {mark.line + 1}); a config is "
                    "sections of fields, two levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """Refuse a key written twice in one mapping, at any depth: PyYAML keeps the last silently (a second
        `kl:` section once turned a constant-KL run into GRPO-D)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise YamlTooComplex(
                    f"key {show(key)} appears twice in one mapping (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); YAML would keep only the last. Merge them into one"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` with the alias and depth limits (raises `YamlTooComplex` or `yaml.YAMLError`)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """`repr(value)` cut to `limit` characters (with how much was left out), for error messages."""
    text = repr(value) if not isinstance(value, list | dict | tuple) else _short_container(value, limit)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _short_container(value: Any, limit: int) -> str:
    """A container's repr built item by item and stopped at `limit` (a shared-reference bomb never expands)."""
    out: list[str] = []
    size = 0
    items = value.items() if isinstance(value, dict) else value
    for item in items:
        piece = f"{show(item[0], limit)}: {show(item[1], limit)}" if isinstance(value, dict) else show(item, limit)
        out.append(piece)
        size += len(piece) + 2
        if size > limit:
            out.append("...")
            break
    open_, close = ("{", "}") if isinstance(value, dict) else ("(", ")") if isinstance(value, tuple) else ("[", "]")
    return open_ + ", ".join(out) + close


def path_problem(value: str, max_len: int = MAX_PATH) -> str | None:
    """Why `value` cannot be used as a path (NUL byte, too long), or None."""
    if "\x00" in value:
        return "contains a NUL byte"
    if len(value) > max_len:
        return f"is {len(value)} characters long (at most {max_len})"
    return None


def name_problem(value: str) -> str | None:
    """Why `value` cannot be one directory name inside another (separators, `..`, absolute, NUL, length)."""
    problem = path_problem(value, MAX_NAME)
    if problem:
        return problem
    if value in (".", ".."):
        return "would name the output directory itself or its parent"
    if "/" in value or "\\" in value:
        return "must be one directory name, without / or \\ (it is joined to train.output_dir)"
    if any(ord(c) < 32 for c in value):
        return "contains control characters"
    return None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what is wrong and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml_file(p: Path) -> Any:
    """A config file's YAML, bounded in size, aliases and nesting; every failure a `ConfigError`."""
    name = show(str(p))
    problem = path_problem(str(p))
    if problem:
        raise ConfigError(f"config file path {name} {problem}")
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise ConfigError(f"config file {name} {what}")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {name} cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"config file {name} is larger than {MAX_YAML_BYTES} bytes; a config is a few hundred")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        return load_yaml(text) or {}
    except YamlTooComplex as exc:
        raise ConfigError(f"config file {name}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {name} is not valid YAML: {yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"config file {name} is nested too deeply to be a config") from None


def field_problems(cfg: Any) -> list[tuple[str, Any, str]]:
    """Type-level checks of every field: floats finite, strings without NUL and of sane length, the run
    directory one safe name under `train.output_dir`."""
    out: list[tuple[str, Any, str]] = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            value, tp = getattr(section, f.name), hints[f.name]
            key = f"{sec.name}.{f.name}"
            if tp is float and isinstance(value, float) and not math.isfinite(value):
                out.append((key, value, "must be a finite number (not inf or nan)"))
            elif tp is int and isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
                out.append((key, value, f"is out of range (at most {MAX_INT} in size)"))
            elif tp is str and isinstance(value, str) and path_problem(value):
                out.append((key, value, str(path_problem(value))))
    if cfg.train.run_name and name_problem(cfg.train.run_name):
        out.append(("train.run_name", cfg.train.run_name, str(name_problem(cfg.train.run_name))))
    if not cfg.train.output_dir.strip():
        out.append(("train.output_dir", cfg.train.output_dir, "must name a directory (default: runs)"))
    return out


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's `config.yaml` as a mapping of sections; an empty, unreadable or foreign file is a
    `ConfigError` (loading weights under a default config would quietly evaluate the wrong model)."""
    path = Path(run_dir) / "config.yaml"
    what = f"run config {show(str(path))}"
    try:
        text = path.read_bytes()[: MAX_YAML_BYTES + 1].decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} is missing; is {show(str(run_dir))} a run directory?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} is unreadable ({type(exc).__name__})") from None
    try:
        data = load_yaml(text) if text.strip() else None
    except YamlTooComplex as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, RecursionError: a damaged file
        raise ConfigError(f"{what} is not valid YAML ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"{what} is empty or not a mapping of config sections; it is written when a run starts, so this "
            "directory is not a complete run (or the file was truncated). Restore it from the run's notes, or "
            "evaluate with --model instead of --run"
        )
    return data


def new_dir_mode() -> int:
    """The mode a new directory gets under the current umask, read without setting it (threads share it):
    an export or cache built in a `tempfile.mkdtemp` (0700) directory and renamed into place must end up as
    `mkdir` would have made it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            line = next(x for x in fh if x.startswith("Umask:"))
        return 0o777 & ~int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        return 0o755
