"""The notebooks and their solved copies: generated from their sources, laid out as a class uses them, and
executed. Every solution runs here (nbclient) and must make every exercise check pass; every unsolved notebook
runs in JupyterLab in `tests/test_browser.py` (its exercise checks must say "not yet" without failing the
run), or here when no browser is available, so each is executed once in `make test-all`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
SOLUTION_DIR = NOTEBOOK_DIR / "solutions"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
SOLUTIONS = sorted(SOLUTION_DIR.glob("[0-9]*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9]*.py")) + sorted(SOLUTION_DIR.glob("[0-9]*.py"))
SETUP_MARK = "# Setup: does nothing where othinklab is importable"
CHECK = re.compile(r'check\("(\d\d\.\w+)"')


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_notebooks_exist_and_are_stripped():
    assert [p.name for p in NOTEBOOKS] == [p.name for p in SOLUTIONS], "every notebook needs a solved copy"
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]
    assert NOTEBOOKS[-1].name == "06_real_model_on_gpu.ipynb"  # the GPU notebook comes last
    for path in NOTEBOOKS + SOLUTIONS:
        for cell in _read(path).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is committed with outputs"


def test_notebooks_follow_the_house_layout():
    """Each says at the top what it teaches, its measured time and what changes on a GPU; its first code cell
    is the same install cell; it has a checks cell printing "all checks passed", then 3-5 graded exercises
    and a progress line."""
    from othinklab.exercises import EXERCISES

    setup = None
    for path in NOTEBOOKS + SOLUTIONS:
        nb = _read(path)
        top = nb.cells[0].source
        assert all(k in top for k in ("What this teaches", "**Time:**", "**On a GPU:**")), path.name
        assert re.search(r"\*\*Time:\*\* measured: ", top), f"{path.name}: no measured run time at the top"
        code = _code(nb)
        assert code[0].startswith(SETUP_MARK), f"{path.name}: the first code cell is not the install cell"
        setup = setup or code[0]
        assert code[0] == setup, f"{path.name}: its install cell differs from the others"
        md = [(i, c.source.splitlines()) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
        where = {
            h: next((i for i, lines in md if h in lines), None) for h in ("## Checks (these can fail)", "## Exercises")
        }
        assert None not in where.values() and where["## Checks (these can fail)"] < where["## Exercises"], path.name
        checks = next(s for s in code if s.rstrip().endswith('print("all checks passed")'))
        assert "assert " in checks, path.name
        names = [m for s in code for m in CHECK.findall(s)]
        assert 3 <= len(names) <= 5 and len(set(names)) == len(names), (path.name, names)
        assert all(n.startswith(path.name[:2] + ".") and n in EXERCISES for n in names), (path.name, names)
        assert code[-1] == f'print(progress("{path.name[:2]}."))', path.name
        prefix = path.name[:2] + "."
        assert sorted(names) == sorted(n for n in EXERCISES if n.startswith(prefix)), "every exercise is in it"


def _answer_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and CHECK.search(c.source)]


def test_solutions_are_the_notebooks_with_answers():
    """A solution differs from its notebook only in its title cell and its exercise cells; in the notebook those
    hold the `...` placeholder (so its checks say "not yet"), in the solution an answer."""
    for path, sol_path in zip(NOTEBOOKS, SOLUTIONS):
        nb, sol = _read(path), _read(sol_path)
        assert len(nb.cells) == len(sol.cells), path.name
        answers = set(_answer_cells(nb))
        assert answers == set(_answer_cells(sol)), path.name
        for i, (a, b) in enumerate(zip(nb.cells, sol.cells)):
            assert a.cell_type == b.cell_type, (path.name, i)
            if i in answers:
                assert re.search(r"(= \.\.\.|^    \.\.\.)  # your", a.source, re.M), (path.name, a.source)
                assert "# your" not in b.source and a.source != b.source, (sol_path.name, b.source)
            elif i > 0:
                assert a.source == b.source, f"{sol_path.name} cell {i} drifted from {path.name}"
        assert "— solutions" in sol.cells[0].source.splitlines()[0], sol_path.name


def test_every_exercise_says_not_yet_to_the_placeholder(capsys):
    """The unsolved notebook's checks: "not yet", False, never an exception (whatever context they get)."""
    from othinklab.exercises import EXERCISES, check

    for name in EXERCISES:
        assert check(name, ...) is False
        assert check(name, None) is False
    out = capsys.readouterr().out
    assert out.count("not yet (replace the ... with your answer)") == 2 * len(EXERCISES)
    stub = lambda *a: None  # noqa: E731  (a function whose body is still `...`)
    assert check("01.k2", stub) is False and "your function returns nothing yet" in capsys.readouterr().out
    assert check("01.alpha", "half") is False and "✗ 01.alpha" in capsys.readouterr().out  # wrong: a hint
    assert check("01.alpha", 0.5) is True and "✓ 01.alpha: right" in capsys.readouterr().out


def _cells(nb) -> list[tuple[str, str]]:
    """What a reader sees of a notebook: each cell's kind and source (ids, metadata and outputs are noise)."""
    return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_is_generated_from_its_py_source():
    """The percent-format .py is the file people edit and review; its .ipynb must be what jupytext makes of it.
    When this fails, run `make notebooks` (or edit the .py, not the .ipynb)."""
    import jupytext

    assert [p.with_suffix("") for p in SOURCES] == [p.with_suffix("") for p in NOTEBOOKS + SOLUTIONS]
    for src in SOURCES:
        assert src.read_text(encoding="utf-8").startswith("# ---\n# jupyter:\n"), f"{src.name}: no jupytext header"
        want = jupytext.read(src, fmt="py:percent")
        have = _read(src.with_suffix(".ipynb"))
        assert _cells(have) == _cells(want), f"{src.with_suffix('.ipynb')} drifted from {src.name}: make notebooks"
        assert have.metadata.get("kernelspec") == want.metadata.get("kernelspec"), src.name


def test_the_drift_check_sees_an_edit(tmp_path):
    """A changed line in the .py alone makes the pair differ (so the check above can fail)."""
    import jupytext

    src = SOURCES[0]
    edited = tmp_path / src.name
    edited.write_text(src.read_text(encoding="utf-8").replace("SEED = 0", "SEED = 1", 1), encoding="utf-8")
    assert _cells(jupytext.read(edited)) != _cells(jupytext.read(src))


def execute(path: Path, tmp_path: Path) -> tuple[str, float]:
    """Run a notebook top to bottom in a fresh kernel; its printed text and wall seconds."""
    from nbclient import NotebookClient

    nb = _read(path)
    start = time.perf_counter()
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return text, seconds


def exercise_count(path: Path) -> int:
    return sum(len(CHECK.findall(s)) for s in _code(_read(path)))


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_runs_and_passes_every_check(path, base_dir, tmp_path):
    text, seconds = execute(path, tmp_path)
    n = exercise_count(path)
    print(f"{path.name}: {seconds:.0f} s")
    assert "all checks passed" in text
    assert text.count("✓ ") == n and "✗" not in text and "not yet" not in text, text[-3000:]
    assert f"{n} of {n} exercises right - well done!" in text


def browser_available() -> bool:
    """Whether tests/test_browser.py can run (it then executes the unsolved notebooks in JupyterLab)."""
    import importlib.util
    import os

    chromium = Path(os.environ.get("OTHINKLAB_CHROMIUM", "/usr/bin/chromium"))
    return chromium.exists() and importlib.util.find_spec("playwright") is not None


def assert_unsolved_output(text: str, n: int) -> None:
    """An unsolved notebook ran to its end: its checks passed, each exercise said "not yet", none graded."""
    assert "all checks passed" in text, text[-3000:]
    assert text.count("not yet (replace the ... with your answer)") + text.count("returns nothing yet") == n
    assert "✓ " not in text and "✗" not in text and f"0 of {n} exercises right" in text


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_unsolved_notebook_runs_where_no_browser(path, base_dir, tmp_path):
    if browser_available():
        pytest.skip("executed in JupyterLab by tests/test_browser.py")
    text, seconds = execute(path, tmp_path)
    print(f"{path.name}: {seconds:.0f} s")
    assert_unsolved_output(text, exercise_count(path))


def test_shipped_grid_reads_as_notebook_04_shows_it():
    """Notebook 04's tables and figures over the shipped powered grid (its detailed check cell, moved here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from othinklab import plots
    from othinklab.evaluate import cross_task_matrix
    from othinklab.grid import METHODS
    from othinklab.grid_report import claims_figure, load_shipped_results

    try:
        shipped = load_shipped_results(None)
    except FileNotFoundError:
        pytest.skip("no shipped grid in data/results/")
    results, claims, prov = shipped["results"], shipped["claims"], shipped["provenance"]
    greedy = cross_task_matrix(results) * 100
    delta = greedy.sub(greedy.xs("base", level="method"), level="train_task").round(1)
    assert set(results["method"]) == set(METHODS) >= {"base", "base_direct", "sft", "grpo", "grpo_d"}
    assert set(results["train_task"]) == {"counting", "geometry"}
    assert set(results["eval_task"]) == {"counting:ood", "geometry:test"}
    assert greedy.shape == (10, 2) and not greedy.isna().any().any()
    assert results["greedy_accuracy"].between(0, 1).all() and results["sampled_accuracy"].between(0, 1).all()
    assert claims[["ours_better", "ours_worse"]].stack().between(0, 100).all()
    assert set(claims["verdict"]) <= {"holds", "reversed", "borderline", "not separable"}
    for r in claims.itertuples():  # rounded to 0.01 points; the verdict used the unrounded bounds
        assert r.lo <= r.diff + 0.01 and r.diff <= r.hi + 0.01, r.claim
    assert {"GRPO-D > SFT, cross-task (geometry -> counting)", "GRPO-D > GRPO, same task (counting)"} <= set(
        claims["claim"]
    )
    assert set(claims["metric"]) == {"greedy", "sampled"} and len(claims[claims.better == "base_direct"]) == 4
    for m in ("base", "base_direct"):  # the base is one model: same numbers under both train tasks
        assert (greedy.xs(m, level="method").loc["counting"] == greedy.xs(m, level="method").loc["geometry"]).all()
    assert (delta.xs("base", level="method") == 0).all().all()
    paper = plots.paper_results()
    bars, heat, fig = plots.cross_task_bars(results, paper=paper), plots.cross_task_heatmap(results, paper=paper), None
    try:
        assert 76.5 in list(bars.axes[0].collections[0].get_offsets()[:, 1])  # paper: GRPO-D on counting
        texts = [t.get_text() for t in heat.axes[1].texts]
        assert "76.5" in texts and "69.5" in texts and len(heat.axes) == 2  # 69.5: GRPO-D geometry -> counting
        assert f"{greedy.iloc[0, 0]:.1f}" in [t.get_text() for t in heat.axes[0].texts]
        fig = claims_figure(claims, "greedy")
        marks = [ln.get_xdata()[0] for ln in fig.axes[0].lines if ln.get_marker() == "x"]
        assert any(abs(x - (76.5 - 64.5)) < 1e-6 for x in marks)  # paper: GRPO-D - GRPO on counting
        assert len(fig.axes[0].get_yticks()) == (claims.metric == "greedy").sum()
    finally:
        for f in (bars, heat, fig):
            if f is not None:
                plt.close(f)
    assert prov["commit"] and prov["command"] and prov["wall_seconds"] > 0 and prov["versions"]
