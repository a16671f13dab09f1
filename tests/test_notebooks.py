"""Every notebook runs top to bottom on the CPU default (its final cell asserts, so it can fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


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
    print "all checks passed", then "try this" exercises; 03-05 match their generator."""
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

    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS[0].parent / "make_notebooks.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, cells in gen.NOTEBOOKS.items():
        nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
        assert [c.source for c in nb.cells] == [c.source for c in cells], f"{name} differs from make_notebooks.py"


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
