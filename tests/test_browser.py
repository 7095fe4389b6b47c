"""The suite in a real browser: Debian's chromium, driven by Python playwright.

- `bash ci/lab.sh` starts JupyterLab; notebook 03 (with its small CI parameters injected, nothing
  else changed) runs every cell in the browser without an error, its training shows a progress
  bar, and moving the checkpoint explorer's slider redraws the figure (screenshots compared).
- The main job's HTML report (`scidl.report`), opened in the browser, shows every notebook's
  Verdict lines and links to the notebooks rendered with their figures.

Screenshots go to out/test-screenshots/. Without a browser these tests fail, saying how to get one
(ci/test.sh installs it with apt-get when run as root); they never skip.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import yaml

from scidl.report import write_report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SMALL = yaml.safe_load((ROOT / "ci" / "small_params.yaml").read_text())
SHOTS = ROOT / "out" / "test-screenshots"
# the flags a closed network needs: no background connections, no first-run or component updates
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = os.environ.get("SCIDL_CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("the browser tests need Debian's chromium, which is not installed: run "
                    "`sudo apt-get install chromium` (ci/test.sh does it when run as root) or set "
                    "SCIDL_CHROMIUM=/path/to/chromium", pytrace=False)
    return path


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            # offline by construction: only loopback and file pages load (nbconvert's pages link CDNs)
            page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), lambda route: route.abort())
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(root_dir: Path, env: dict[str, str], timeout: float = 180.0):
    """Start `bash ci/lab.sh` serving `root_dir`; yield (base URL, token, output lines); stop it."""
    port, token = _free_port(), "scidl-test-" + os.urandom(16).hex()  # lab.sh refuses fewer than 32 characters
    home = root_dir.parent / "jupyter-home"  # no user settings or workspaces leak in
    env = {**os.environ, **env, "SCIDL_LAB_PORT": str(port), "SCIDL_LAB_TOKEN": token,
           "SCIDL_LAB_DIR": str(root_dir), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    proc = subprocess.Popen(
        ["bash", str(ROOT / "ci" / "lab.sh"), "--LabApp.expose_app_in_browser=True"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ci/lab.sh exited with {proc.returncode}:\n{''.join(lines)}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{''.join(lines)}", pytrace=False)
            time.sleep(0.5)
        yield base, token, lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        reader.join(timeout=15)  # ends when the server and its kernels have closed the pipe
        if not reader.is_alive():
            proc.stdout.close()


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
# true once every code cell has run and the kernel is idle, or as soon as any cell shows an error
ALL_CELLS_RAN_OR_ERROR = """() => { const m = window.jupyterapp.shell.currentWidget.content.model;
  let ran = 0, code = 0;
  for (let i = 0; i < m.cells.length; i++) { const c = m.cells.get(i);
    if (c.type !== 'code') continue; code++; if (typeof c.executionCount === 'number') ran++;
    for (let j = 0; j < c.outputs.length; j++) if (c.outputs.get(j).type === 'error') return true; }
  const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  return code > 0 && ran === code && k.status === 'idle'; }"""
CELL_ERRORS = """() => { const m = window.jupyterapp.shell.currentWidget.content.model; const errs = [];
  for (let i = 0; i < m.cells.length; i++) { const c = m.cells.get(i); if (c.type !== 'code') continue;
    for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') errs.push(`cell ${i}: ${o.ename}: ${o.evalue}`); } }
  return errs; }"""
SAVE_CURRENT = """async () => { const w = window.jupyterapp.shell.currentWidget; await w.context.ready;
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('save timed out')), 60000));
  await Promise.race([w.context.save(), timeout]); return w.context.path; }"""
EXPLORER_IMG = ".jupyter-widgets-output-area img, .widget-output img"


def test_lab_command_runs_the_explorer_notebook_and_the_slider_redraws(tmp_path):
    work = tmp_path / "lab"
    work.mkdir()
    nb = ROOT / "notebooks" / "03_zoom_in.ipynb"
    # the suite's notebook 03 with small parameters injected (papermill prepares, runs nothing): a
    # one-hot MLP that groks in a few seconds (Gromov 2023), so the slider shows the circuit forming
    params = {**SMALL[nb.stem], "op": "add", "p": 97, "d_mlp": 256, "steps": 600}
    pm.execute_notebook(str(nb), str(work / nb.name), parameters=params, prepare_only=True,
                        kernel_name="python3", progress_bar=False)
    prepared = nbformat.read(work / nb.name, as_version=4)
    for cell in prepared.cells:  # no committed outputs or counts: what the test sees, the browser ran
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(prepared, work / nb.name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {"SCIDL_STORE": str(tmp_path / "runs"), "SCIDL_LEDGER": str(tmp_path / "ledger.jsonl"),
           "SCIDL_PROGRESS": "1"}  # bars on: the test sees the training's progress widget
    with lab_server(work, env) as (base, token, lines), browser_page() as page:
        out = "".join(lines)
        assert f"[lab] open {base}/lab?token={token}" in out, f"ci/lab.sh prints the URL with its token:\n{out}"
        assert f"[lab] run store: {tmp_path / 'runs'}" in out and f"[lab] ledger:    {tmp_path / 'ledger.jsonl'}" in out
        spec = _get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]["python3"]["spec"]
        venv_bin = Path(os.environ.get("SCIDL_VENV", ROOT / ".venv")) / "bin"
        assert os.path.samefile(Path(spec["argv"][0]).parent, venv_bin), \
            f"JupyterLab's python3 kernel is not the project's: {spec['argv']}"
        page.goto(f"{base}/lab/tree/{nb.name}?token={token}")
        page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=500)
        # started, not awaited: the wait below is bounded and stops early on an error
        page.evaluate("() => { void window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function(ALL_CELLS_RAN_OR_ERROR, timeout=240_000, polling=1000)
        errors = page.evaluate(CELL_ERRORS)
        assert errors == [], f"cells show errors in JupyterLab: {errors}"
        bars = page.locator(".widget-hprogress .progress-bar")
        assert bars.count() >= 1, "training shows a progress bar widget"
        assert "progress-bar-success" in bars.first.get_attribute("class"), "the finished bar is complete"

        image = page.locator(EXPLORER_IMG).first
        image.scroll_into_view_if_needed()
        before_src = image.get_attribute("src")
        explorer = page.locator(".widget-vbox", has=page.locator(EXPLORER_IMG)).first
        explorer.screenshot(path=str(SHOTS / "explorer_last_checkpoint.png"))
        figure_before = image.screenshot()  # the figure alone, not the slider
        readout = explorer.locator(".widget-readout").first
        assert readout.inner_text().strip() == str(params["steps"]), "slider starts at the last checkpoint"
        handle = explorer.locator(".noUi-handle").first
        handle.focus()
        page.keyboard.press("Home")  # the slider's first checkpoint, step 0
        page.wait_for_function(
            "([sel, src]) => { const i = document.querySelector(sel); return i && i.getAttribute('src') !== src; }",
            arg=[EXPLORER_IMG, before_src], timeout=60_000, polling=250)
        assert readout.inner_text().strip() == "0"
        time.sleep(0.5)  # let the new image finish painting before the screenshot
        explorer.screenshot(path=str(SHOTS / "explorer_first_checkpoint.png"))
        assert image.screenshot() != figure_before, "moving the slider changed the rendered figure"
        assert page.evaluate(CELL_ERRORS) == []
        assert page.get_by_text("Jupyter news").count() == 0, "an offline lab asks nothing about news"
        page.screenshot(path=str(SHOTS / "lab_notebook_03.png"))


def test_opening_and_saving_a_committed_notebook_in_lab_changes_no_byte(tmp_path):
    """JupyterLab rewrites what it would store differently (kernelspec, widget state, final newline):
    the committed notebooks must already be as Lab saves them, or opening one dirties the checkout."""
    work = tmp_path / "lab"
    work.mkdir()
    for nb in NOTEBOOKS:
        shutil.copy(nb, work / nb.name)
    with lab_server(work, {"SCIDL_STORE": str(tmp_path / "runs")}) as (base, token, _), browser_page() as page:
        for nb in NOTEBOOKS:
            saved = work / nb.name
            before = saved.stat().st_mtime_ns
            page.goto(f"{base}/lab/tree/{nb.name}?token={token}")
            page.wait_for_function("(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                   " return !!w && !!w.context && w.context.path === name; }",
                                   arg=nb.name, timeout=120_000, polling=250)
            page.wait_for_function(KERNEL_IDLE, timeout=120_000, polling=500)
            path = page.evaluate(SAVE_CURRENT)
            assert path == nb.name and saved.stat().st_mtime_ns != before, f"{nb.name}: JupyterLab did not save it"
            assert saved.read_bytes() == nb.read_bytes(), f"{nb.name}: JupyterLab's save changed the committed file"


def _verdict_lines(nb_path: Path) -> list[str]:
    """The `name = value` lines printed under the Verdict heading, read independently of scidl.report."""
    cells, lines, seen = nbformat.read(nb_path, as_version=4).cells, [], False
    for cell in cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## Verdict"):
            seen = True
        elif seen and cell.cell_type == "code":
            text = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
            lines += [m.group(0) for m in re.finditer(r"^[\w.]+ = .+$", text, flags=re.M)]
    return lines


def test_report_in_the_browser_shows_every_verdict(tmp_path):
    # the committed notebooks are executed notebooks (nbval checks their outputs)
    index = write_report(NOTEBOOKS, tmp_path / "report")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with browser_page(1400, 1000) as page:
        page.goto(index.as_uri(), wait_until="domcontentloaded")
        for nb in NOTEBOOKS:
            expected = _verdict_lines(nb)
            assert len(expected) >= 3, f"{nb.name}: its Verdict prints name = value lines"
            row = page.locator(f'tr[id="{nb.stem}"]')
            assert row.is_visible()
            shown = row.inner_text()
            missing = [line for line in expected if line not in shown]
            assert not missing, f"{nb.stem}: the report's row lacks {missing}"
            question = " ".join(re.search(r"\*\*Question\.\*\*(.*?)\n\s*\n", nbformat.read(nb, as_version=4)
                                          .cells[0].source, flags=re.S).group(1).replace("*", "").split())
            text, maths = re.split(r"\$[^$]+\$", question), re.findall(r"\$[^$]+\$", question)
            flat = " ".join(shown.split())
            assert question and all(t.strip() in flat for t in text), f"{nb.stem}: the row shows its question"
            assert row.locator("math").count() == len(maths), f"{nb.stem}: its math is rendered (MathML), not raw"
            assert row.locator("img.thumb").count() == 1, f"{nb.stem}: the row shows its key figure"
            if "verdicts = {" in "\n".join(expected):
                assert row.locator("span.badge").count() >= 3, f"{nb.stem}: hypothesis verdicts are badges"
        page.screenshot(path=str(SHOTS / "report_index.png"), full_page=True)
        page.locator("a", has_text=NOTEBOOKS[0].stem).first.click()
        page.wait_for_load_state("domcontentloaded")
        assert page.url.endswith(f"html/{NOTEBOOKS[0].stem}.html")
        assert page.locator("img[src^='data:image/png']").count() >= 1, "figures are inline in the page"
        page.screenshot(path=str(SHOTS / f"report_{NOTEBOOKS[0].stem}.png"))


def test_lab_refuses_a_short_token_before_starting(tmp_path):
    env = {**os.environ, "SCIDL_LAB_TOKEN": "a", "SCIDL_LAB_PORT": str(_free_port()), "SCIDL_LAB_DIR": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "ci" / "lab.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "SCIDL_LAB_TOKEN (1 characters) is not allowed" in done.stderr and "at least 32" in done.stderr
