"""Every notebook runs top to bottom on the CPU default (its final cell asserts, so it can fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9]*.py"))


def test_notebooks_exist_and_are_stripped():
    import nbformat

    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} is committed with outputs"


def test_notebooks_follow_the_house_layout():
    """Each says at the top what it teaches, its CPU time and what changes on a GPU; ends with asserts that
    print "all checks passed", then "try this" exercises."""
    import nbformat

    names = [p.name for p in NOTEBOOKS]
    for want in ("03_reward_and_rollout_inspection", "04_cross_task_generalization", "05_real_model_on_gpu"):
        assert f"{want}.ipynb" in names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        top, checks, last = nb.cells[0].source, nb.cells[-2].source, nb.cells[-1].source
        assert all(k in top for k in ("What this teaches", "**Time:**", "**On a GPU:**")), path.name
        assert "assert " in checks and checks.rstrip().endswith('print("all checks passed")'), path.name
        assert last.startswith("## Try this"), path.name


def _cells(nb) -> list[tuple[str, str]]:
    """What a reader sees of a notebook: each cell's kind and source (ids, metadata and outputs are noise)."""
    return [(c.cell_type, c.source) for c in nb.cells]


def test_every_notebook_is_generated_from_its_py_source():
    """The percent-format .py is the file people edit and review; its .ipynb must be what jupytext makes of it.
    When this fails, run `make notebooks` (or edit the .py, not the .ipynb)."""
    import jupytext
    import nbformat

    assert [p.stem for p in SOURCES] == [p.stem for p in NOTEBOOKS], "every notebook needs a paired .py source"
    for src in SOURCES:
        assert src.read_text(encoding="utf-8").startswith("# ---\n# jupyter:\n"), f"{src.name}: no jupytext header"
        want = jupytext.read(src, fmt="py:percent")
        have = nbformat.read(src.with_suffix(".ipynb"), as_version=4)
        assert _cells(have) == _cells(want), f"{src.with_suffix('.ipynb').name} drifted from {src.name}: make notebooks"
        assert have.metadata.get("kernelspec") == want.metadata.get("kernelspec"), src.name


def test_the_drift_check_sees_an_edit(tmp_path):
    """A changed line in the .py alone makes the pair differ (so the check above can fail)."""
    import jupytext

    src = SOURCES[0]
    edited = tmp_path / src.name
    edited.write_text(src.read_text(encoding="utf-8").replace("SEED = 0", "SEED = 1", 1), encoding="utf-8")
    assert _cells(jupytext.read(edited)) != _cells(jupytext.read(src))


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, base_dir, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "all checks passed" in outputs
