"""Every notebook in a real browser: JupyterLab on localhost, each unsolved notebook opened in headless
Chromium and run as a user runs it (Run > Run All Cells), then checked as a user sees it: its checks passed,
its exercises said "not yet" without stopping the run, its figures and widgets rendered; notebook 03's
rollout inspector also responds to its step slider. One screenshot per notebook is saved to
`$OTHINKLAB_SCREENSHOT_DIR` (default: the system temp dir) as `othinklab-NN_name.png`.

This is where the unsolved notebooks execute in `make test-all` (their solved copies run in nbclient in
`tests/test_notebooks.py`, which also runs the unsolved ones when this test cannot). Skips, with the reason,
when Chromium (Debian's `chromium` package) or playwright is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from test_notebooks import NOTEBOOKS, assert_unsolved_output, exercise_count

CHROMIUM = Path(os.environ.get("OTHINKLAB_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "othinklab-browser-test"
RENDERED = {  # per notebook: rendered output images at least, and CSS selectors that must be on the page
    "01": (1, []),
    "02": (2, []),
    "03": (2, [".othinklab-live-view svg polyline", ".othinklab-rollout-inspector table.othinklab-rollouts"]),
    "04": (4, []),
    "05": (2, []),
    "06": (1, [".othinklab-live-view svg polyline", ".othinklab-rollout-inspector table.othinklab-rollouts"]),
}
"""What each notebook must show once run (figures are PNG outputs; the widgets are ipywidgets views)."""
FOCUS = {"03": ".othinklab-rollout-inspector", "06": ".othinklab-live-view"}
"""What each screenshot is scrolled to (default: the first figure)."""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    """JupyterLab serving a temp root with the six notebooks in it; yields its base URL."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's chromium package: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    base_dir = request.getfixturevalue("base_dir")  # build the tiny base here, not inside a notebook's kernel
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    for nb in NOTEBOOKS:
        shutil.copy(nb, root / nb.name)
    settings = tmp / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # render every cell (no windowing), so outputs far down the notebook are in the DOM
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "OTHINKLAB_HOME": os.environ.get("OTHINKLAB_HOME", str(base_dir.parent)),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    port = _free_port()
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.allow_root=True",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                raise AssertionError("JupyterLab did not start:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


OUTPUTS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
                      .map(e => e.textContent).join('\\n')"""
"""The text of every cell's output (not the sources and markdown, which mention "not yet", ✓ and ✗ too)."""


def _run_all(page, lab: str, name: str) -> str:
    """Open `name`, wait for its kernel, Run All Cells, wait for the last cell; the text of its outputs."""
    # a workspace of its own, reset: only this notebook is open (not the ones the earlier tests opened)
    page.goto(f"{lab}/lab/workspaces/{Path(name).stem}/tree/{name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=180_000)
    page.wait_for_function(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                   return w && w.sessionContext && w.sessionContext.session &&
                          w.sessionContext.session.kernel &&
                          w.sessionContext.session.kernel.status === 'idle'; }""",
        timeout=180_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(  # the last cell prints "N of M exercises right"; a failing cell stops the run
        f"() => {{ const t = ({OUTPUTS})(); return t.includes(' exercises right') || t.includes('Traceback'); }}",
        timeout=1_800_000,
        polling=1000,
    )
    page.wait_for_timeout(1000)  # let the last widgets and images settle
    return page.evaluate(OUTPUTS)


def _rendered_images(page) -> int:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.jp-OutputArea-output img'))
                      .filter(i => i.complete && i.naturalWidth > 0).length"""
    )


def _inspector_state(page) -> dict:
    return page.evaluate(
        """() => {
        const box = document.querySelector('.othinklab-rollout-inspector');
        if (!box) return null;
        const table = box.querySelector('table.othinklab-rollouts');
        const header = Array.from(box.querySelectorAll('b')).map(b => b.textContent).find(t => t.startsWith('step'));
        return {
            table: table ? table.textContent : '',
            rows: table ? table.querySelectorAll('tr').length - 1 : 0,
            coloured: box.querySelectorAll('.othinklab-tokens span[title]').length,
            header: header || '',
            images: Array.from(box.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0).length,
        };
    }"""
    )


def _move_the_slider(page) -> tuple[dict, dict]:
    """Notebook 03: the inspector starts at step 0; one notch of its slider shows another step."""
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('.othinklab-rollout-inspector img'))
                      .some(i => i.complete && i.naturalWidth > 0)"""
    )
    before = _inspector_state(page)
    assert before["rows"] == 32 and before["coloured"] > 0 and before["images"] >= 1, before
    assert before["header"].startswith("step 0"), before
    handle = page.locator(".othinklab-rollout-inspector .noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.focus()
    page.keyboard.press("ArrowRight")
    changed = (
        "(old) => { const b = document.querySelector('.othinklab-rollout-inspector table.othinklab-rollouts');"
        " return b && b.textContent !== old; }"
    )
    try:
        page.wait_for_function(changed, arg=before["table"], timeout=60_000)
    except Exception:  # keyboard not wired in this ipywidgets build: click near the track's right end
        box = page.locator(".othinklab-rollout-inspector .noUi-target").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.98, box["y"] + box["height"] / 2)
        page.wait_for_function(changed, arg=before["table"], timeout=60_000)
    after = _inspector_state(page)
    assert after["table"] != before["table"] and after["header"] != before["header"], (before, after)
    assert not after["header"].startswith("step 0") and after["rows"] == 32
    return before, after


def _screenshot(page, key: str, path: Path) -> None:
    no_news = page.get_by_role("button", name="No", exact=True)  # JupyterLab's "notify about news?" toast
    if no_news.count():
        no_news.first.click()
        page.wait_for_timeout(1500)  # let the toast slide away
    target = FOCUS.get(key)
    focus = page.locator(target).first if target else page.locator(".jp-OutputArea-output img").first
    if focus.count():
        focus.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
    page.screenshot(path=str(path))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_in_jupyterlab(notebook, lab, browser, tmp_path):
    key = notebook.name[:2]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    try:
        start = time.perf_counter()
        text = _run_all(page, lab, notebook.name)
        seconds = time.perf_counter() - start
        assert "Traceback" not in text, f"{notebook.name} failed in the browser:\n" + text[-3000:]
        assert_unsolved_output(text, exercise_count(notebook))
        images, selectors = RENDERED[key]
        assert _rendered_images(page) >= images, f"{notebook.name}: fewer than {images} figures rendered"
        for sel in selectors:
            assert page.locator(sel).count() > 0, f"{notebook.name}: {sel} did not render"
        moved = _move_the_slider(page) if key == "03" else None
        shot = tmp_path / f"othinklab-{notebook.stem}.png"
        _screenshot(page, key, shot)
    finally:
        page.evaluate("() => window.jupyterapp && window.jupyterapp.serviceManager.sessions.shutdownAll()")
        page.close()
    assert shot.stat().st_size > 20_000
    out = Path(os.environ.get("OTHINKLAB_SCREENSHOT_DIR", tempfile.gettempdir()))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / shot.name)
    slider = f"; inspector went from {moved[0]['header']!r} to {moved[1]['header']!r}" if moved else ""
    print(f"{notebook.name}: ran in {seconds:.0f} s in JupyterLab; screenshot {out / shot.name}{slider}")
