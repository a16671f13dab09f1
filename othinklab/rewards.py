"""Rule-based rewards (docs/paper.md, Eq. 1): `R = R_acc + alpha * R_format`, as in R1-V.

Why: GRPO needs a scalar per completion, and the paper uses R1-V's two verifiable rewards. Everything
here is pure (no I/O, no randomness) and never raises on model output: a reward function that crashes
on a weird completion would kill a training run at step 140.

Simplified versus R1-V / the paper:
- accuracy compares the *extracted* `<answer>` contents with the solution's: normalised string, then
  float, then math-verify (symbolic); R1-V tries math-verify on the whole completion first. Answers over
  `MAX_SYMBOLIC_CHARS` are only string-compared; a math-verify error or timeout counts as "not equal".
- of several `<answer>` tags the **last** complete one counts (R1-V's `re.search` takes the first, and
  its format check accepts such completions): it is the model's final word when it corrects itself.
- both sides are normalised (`normalize_answer`): R1-V's GeoQA test writes roots as `√{3}` (about 60
  of its 754 gold answers), π as a symbol and lengths with units (`8cm`, `9米`); a model writing
  `2\\sqrt{3}`, `2\\pi` or `8` is right and scores 1.
- math-verify's timeouts use `signal.alarm`, main thread only; elsewhere (data-loader workers, thread
  pools) we parse without one, and long, deeply nested, power-tower or factorial answers are string-compared.
- format: R1-V's regex matched against the *whole* completion (`re.fullmatch`, as R1-V since
  2025-02-07), after stripping surrounding whitespace, which R1-V does not.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from othinklab.errors import ConfigError, TrainingError

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
FORMAT_RE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
MAX_SYMBOLIC_CHARS = 200
"""Answers longer than this are compared as strings only (math-verify can be slow on them)."""
MAX_NESTING = 6
"""Answers with brackets nested deeper than this are compared as strings only."""
SYMBOLIC_TIMEOUT_S = 2
"""math-verify's per-call timeout in the main thread (seconds, integer: it uses `signal.alarm`)."""

# Degree markers and other decorations that never change a numeric answer.
_DECORATIONS = re.compile(
    r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree|\bdegrees?\b|\\[,;!]|\\left|\\right",
    re.IGNORECASE,
)
_TEXT_WRAPPERS = re.compile(r"\\(?:text|mathrm|mbox)\s*\{([^{}]*)\}")
_UNITS = re.compile(
    r"(?:(?<=[\d}\)π])|(?<=\\pi))\s*(?:平方米|平方厘米|厘米|千米|公里|海里|小时|分钟|米|秒|km|cm|mm|dm|m)"
    r"(?:\^\{?[23]\}?\^?|[²³])?$"
)
"""A length/area/time unit ending a numeric answer (GeoQA writes `8cm`, `9米`, `27cm^{2}`, `2√{15}米`)."""
_ROOT_BRACED = re.compile(r"√\s*\{")
_ROOT_BARE = re.compile(r"(?:√|\\sqrt)\s*(\d+(?:\.\d+)?)")


def extract_answer(text: Any) -> str | None:
    """Stripped content of the last complete `<answer>…</answer>` in `text`, or None.

    >>> extract_answer("<think>hm</think><answer> 3 </answer>")
    '3'
    >>> extract_answer("<answer>1</answer> then <answer>2</answer>")
    '2'
    >>> extract_answer("<answer>unclosed") is None
    True
    """
    if not isinstance(text, str):
        return None
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def format_reward(text: Any) -> float:
    """1.0 if the whole (stripped) completion is `<think>…</think> <answer>…</answer>`, else 0.0.

    >>> format_reward("<think>a</think>\\n<answer>3</answer>")
    1.0
    >>> format_reward("<answer>3</answer>")
    0.0
    """
    if not isinstance(text, str):
        return 0.0
    return 1.0 if FORMAT_RE.fullmatch(text.strip()) else 0.0


@functools.lru_cache(maxsize=65536)
def normalize_answer(s: str) -> str:
    """One spelling per answer: no `$`, `\\text{}`, degree signs, trailing units or full stop; roots as
    `\\sqrt{..}`, π as `\\pi`, `\\dfrac` as `\\frac`; whitespace collapsed.

    >>> normalize_answer("2√{3}"), normalize_answer("√5"), normalize_answer("2\\\\sqrt 3 cm")
    ('2\\\\sqrt{3}', '\\\\sqrt{5}', '2\\\\sqrt{3}')
    >>> normalize_answer("27cm^{2}"), normalize_answer("(√{3}+1)小时"), normalize_answer("65π"), normalize_answer("40°")
    ('27', '(\\\\sqrt{3}+1)', '65\\\\pi', '40')
    """
    s = _TEXT_WRAPPERS.sub(r"\1", s.strip())
    s = _DECORATIONS.sub("", s)
    s = s.replace("$", "").strip().rstrip(".").strip()
    s = _UNITS.sub("", s).strip()
    s = _ROOT_BRACED.sub(r"\\sqrt{", s)
    s = _ROOT_BARE.sub(r"\\sqrt{\1}", s)
    s = s.replace("π", "\\pi").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return " ".join(s.split())


@functools.lru_cache(maxsize=65536)
def _as_float(clean: str) -> float | None:
    """`float(clean)` when the cleaned answer is a plain number, else None."""
    if "_" in clean:
        return None
    try:
        value = float(clean.replace(" ", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parser_safe(s: str) -> bool:
    """Cheap guard against inputs that make math-verify / sympy crawl (off the main thread there is
    no timeout): unbalanced or deeply nested brackets, power towers, factorials."""
    depth = max_depth = 0
    for ch in s:
        depth += (ch in "({[") - (ch in ")}]")
        max_depth = max(max_depth, depth)
    return (
        depth >= 0
        and max_depth <= MAX_NESTING
        and s.count("{") == s.count("}")
        and s.count("^") + s.count("**") <= 1
        and "!" not in s
    )


@functools.lru_cache(maxsize=65536)
def _parse_cached(clean: str, timeout: int | None) -> tuple:
    """math-verify parse of a cleaned answer (LaTeX-wrapped first); empty tuple on failure."""
    from math_verify import parse

    for candidate in (f"${clean}$", clean):
        try:
            parsed = parse(candidate, parsing_timeout=timeout)
        except Exception:  # noqa: BLE001 - math-verify timeouts and parser bugs: treat as unparseable
            parsed = []
        if parsed:
            return tuple(parsed)
    return ()


def answers_equal(pred: str, gold: str) -> bool:
    """True if two bare answers are equal: string, then numeric, then symbolic (math-verify).

    >>> answers_equal("140°", "140"), answers_equal("\\\\frac{1}{2}", "0.5"), answers_equal("3", "4")
    (True, True, False)
    """
    if len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:  # no cache, no parser
        return " ".join(pred.lower().split()) == " ".join(gold.lower().split())
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p.lower() == g.lower() or p.replace(" ", "").lower() == g.replace(" ", "").lower():
        return True
    if not p or not g or not (_parser_safe(p) and _parser_safe(g)):
        return False
    pf, gf = _as_float(p), _as_float(g)
    if pf is not None and gf is not None:
        return math.isclose(pf, gf, rel_tol=1e-6, abs_tol=1e-9)
    main_thread = os.name == "posix" and threading.current_thread() is threading.main_thread()
    timeout = SYMBOLIC_TIMEOUT_S if main_thread else None  # math-verify's `signal.alarm` works there only
    gold_parsed, pred_parsed = _parse_cached(g, timeout), _parse_cached(p, timeout)
    if not gold_parsed or not pred_parsed:
        return False
    try:
        from math_verify import verify

        return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - timeouts or sympy errors: not equal, never raise
        return False


def accuracy_reward(text: Any, solution: Any) -> float:
    """1.0 if the completion's `<answer>` equals the solution's (its `<answer>` content, else all of it), else 0.0.

    >>> accuracy_reward("<think>..</think><answer>140</answer>", "<answer> 140° </answer>")
    1.0
    >>> accuracy_reward("140", "140")
    0.0
    """
    try:
        pred = extract_answer(text)
        if pred is None or not isinstance(solution, str):
            return 0.0
        gold = extract_answer(solution)
        gold = solution.strip() if gold is None else gold
        return 1.0 if answers_equal(pred, gold) else 0.0
    except Exception:  # noqa: BLE001 - a reward must never crash a training run
        return 0.0


def combine(accuracy: Any, fmt: Any, format_weight: float = 1.0) -> Any:
    """Eq. 1, the one place it is written: `R = R_acc + alpha * R_format` (alpha = `format_weight`).

    Works on floats and on arrays or DataFrame columns alike.

    >>> combine(1.0, 1.0, 0.5)
    1.5
    """
    return accuracy + format_weight * fmt


@dataclass(frozen=True)
class RewardBreakdown:
    """The two reward terms and their weighted sum for one completion."""

    accuracy: float
    format: float
    total: float


def score(text: Any, solution: Any, format_weight: float = 1.0) -> RewardBreakdown:
    """All reward terms at once (each computed once).

    >>> score("<think>x</think><answer>3</answer>", "<answer>3</answer>", format_weight=0.5)
    RewardBreakdown(accuracy=1.0, format=1.0, total=1.5)
    """
    acc, fmt = accuracy_reward(text, solution), format_reward(text)
    return RewardBreakdown(accuracy=acc, format=fmt, total=combine(acc, fmt, format_weight))


REWARD_FUNCS: dict[str, Callable[[str, str], float]] = {
    "accuracy": accuracy_reward,
    "format": lambda text, solution: format_reward(text),  # the common (completion, solution) signature
}
"""Reward functions by name, each `(completion, solution) -> float`."""


REWARD_TIMEOUT_S = 30.0
"""Default deadline of one call to a user reward function (`reward.timeout_s`)."""
MAX_TIMEOUTS_IN_A_ROW = 8
"""Reward calls in a row that may time out before training stops (a function that never returns)."""


def load_reward_function(
    spec: str, field: str = "reward.accuracy_function", timeout_s: float = REWARD_TIMEOUT_S
) -> Callable[[str, str], float]:
    """The accuracy term's function from a config value, `(completion, solution) -> float`.

    Empty: R1-V's `accuracy_reward`. Otherwise a name in `REWARD_FUNCS`, `package.module:function`, or
    `path/to/file.py:function` (R1-V-style custom rewards without packaging them); user functions are
    wrapped in `TimedReward` (deadline `timeout_s` seconds per call).
    """
    if not spec:
        return accuracy_reward
    if spec in REWARD_FUNCS:
        return REWARD_FUNCS[spec]
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(
            f"{field}={spec!r}: expected one of {sorted(REWARD_FUNCS)}, 'package.module:function' or 'file.py:function'"
        )
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"{field}={spec!r}: file {where!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"othinklab_user_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
    except (ConfigError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - failing (or sys.exit) at import is the user's error to fix
        raise ConfigError(f"{field}={spec!r}: importing {where!r} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{field}={spec!r}: {where!r} has no function {name!r}")
    return TimedReward(fn, timeout_s, spec)


class RewardTimeout(Exception):
    """A user reward call that did not return within its deadline (scored 0 and logged)."""


class TimedReward:
    """A user reward function called in a worker thread with a deadline.

    Why: a reward that never returns hung the run, and `sys.exit(0)` inside one ended the run as a success.
    A late call scores 0 (its thread is abandoned: Python threads cannot be killed), any exception, even
    SystemExit, is a reward error, and `MAX_TIMEOUTS_IN_A_ROW` timeouts in a row stop training with a
    `TrainingError` naming the function."""

    def __init__(self, fn: Callable[[str, str], float], timeout_s: float, spec: str) -> None:
        self.fn, self.timeout_s, self.spec = fn, timeout_s, spec
        self.timeouts_in_a_row = 0

    def __call__(self, text: str, solution: str) -> Any:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = self.fn(text, solution)
            except BaseException as exc:  # noqa: BLE001 - SystemExit in user code is a reward error
                box["error"] = exc

        worker = threading.Thread(target=run, name="othinklab-reward", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            self.timeouts_in_a_row += 1
            if self.timeouts_in_a_row >= MAX_TIMEOUTS_IN_A_ROW:
                raise TrainingError(
                    f"reward.accuracy_function={self.spec!r} did not return within reward.timeout_s="
                    f"{self.timeout_s:g} s on {self.timeouts_in_a_row} completions in a row; it seems to hang. Fix "
                    "the function (see reward_errors.jsonl) or raise reward.timeout_s"
                )
            raise RewardTimeout(f"did not return within reward.timeout_s={self.timeout_s:g} s (scored 0)")
        self.timeouts_in_a_row = 0
        error = box.get("error")
        if isinstance(error, Exception):
            raise error
        if error is not None:
            raise RuntimeError(f"{type(error).__name__}({error}) raised inside the reward function")
        return box.get("value")


def safe_score(
    text: str,
    solution: str,
    format_weight: float = 1.0,
    accuracy_fn: Callable[[str, str], float] = accuracy_reward,
) -> tuple[RewardBreakdown, str | None]:
    """`score` with a possibly faulty accuracy function: one completion whose reward raises or is not a
    finite number scores 0 (and the error text is returned to be logged) instead of ending the run.

    >>> safe_score("<answer>3</answer>", "<answer>3</answer>", accuracy_fn=lambda c, s: "yes")
    (RewardBreakdown(accuracy=0.0, format=0.0, total=0.0), "accuracy function returned 'yes', not a finite number")
    """
    try:
        acc = accuracy_fn(text, solution)
        fmt = format_reward(text)
    except TrainingError:  # a reward that keeps hanging: stop, saying so
        raise
    except Exception as exc:  # noqa: BLE001 - a reward bug on one completion must not kill the run
        return RewardBreakdown(0.0, 0.0, 0.0), f"{type(exc).__name__}: {exc}"
    try:
        value = float(acc)  # ints, bools, numpy and 0-d torch numbers
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or isinstance(acc, str):
        return RewardBreakdown(0.0, 0.0, 0.0), f"accuracy function returned {acc!r}, not a finite number"
    return RewardBreakdown(accuracy=value, format=fmt, total=combine(value, fmt, format_weight)), None
