"""warmup.py: the base's warm-up targets carry exactly the planted flaws, at the planted rates."""

from __future__ import annotations

from othinklab.rewards import extract_answer, format_reward
from othinklab.tasks import make_task
from othinklab.warmup import COUNTING_SLIP, WARMUP, slip, warmup_target


def _targets(task: str, n: int = 600):
    return [(s, warmup_target(s)) for s in make_task(task).samples(n, seed=5)]


def test_slips_sit_on_the_slice_only_and_move_the_answer_up_by_the_slip():
    for task in ("counting", "geometry"):
        pairs = _targets(task)
        on = [(s, t) for s, t in pairs if slip(s)]
        off = [(s, t) for s, t in pairs if not slip(s)]
        assert on and off
        for s, t in off:  # off the slice every answer is right, tagged or not
            assert t.rstrip(".").endswith(s.answer) or extract_answer(t) == s.answer
        slipped = 0
        for s, t in on:
            said = extract_answer(t) if format_reward(t) else t.rstrip(".").rsplit(" ", 1)[-1]
            assert said in (s.answer, str(int(s.answer) + slip(s))), (s.answer, t)
            if said != s.answer:
                slipped += 1
                assert str(int(s.answer) + slip(s)) in t.split("</think>")[0]  # the reasoning says it too
        assert abs(slipped / len(on) - WARMUP["slip_frac"]) < 0.05, (task, slipped / len(on))


def test_a_tenth_of_the_targets_are_untagged():
    pairs = _targets("counting") + _targets("geometry")
    untagged = sum(not format_reward(t) for _, t in pairs) / len(pairs)
    assert abs(untagged - WARMUP["untagged_frac"]) < 0.03, untagged


def test_the_slice_is_counting_five_or_more_and_four_geometry_rules():
    counts = {int(s.answer): slip(s) for s in make_task("counting").samples(400, seed=1)}
    assert all(v == (COUNTING_SLIP if k >= 5 else 0) for k, v in counts.items())
    rules = {s.meta["rule"]: slip(s) for s in make_task("geometry").samples(400, seed=1)}
    assert sum(bool(v) for v in rules.values()) == 4 and rules["vertical"] == 0
