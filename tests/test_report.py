"""The HTML report (scidl.report) on planted notebooks whose answer is known, the main job writing
it, and progress bars that are silent under CI=true."""
import os
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from scidl.progressbar import progress_enabled
from scidl.report import ReportError, index_html, summarize, write_report
from scidl.train import train

ROOT = Path(__file__).resolve().parents[1]


def _stdout(text):
    return new_output("stream", name="stdout", text=text)


def _planted(path: Path, verdict_text: str, error: tuple[str, str] | None = None, duration=12.5) -> Path:
    cells = [
        new_markdown_cell("# 99 · A planted notebook\n\n**Question.** Does the report\nread this?\n\n"
                          "**Expected answer.** Yes."),
        new_code_cell("print('noise = 1')", outputs=[_stdout("noise = 1\n")]),
        new_markdown_cell("## Verdict\n\n**Claim.** planted"),
        new_code_cell("...", outputs=[_stdout(verdict_text)]),
        new_markdown_cell("**Confidence.** none"),
    ]
    if error:
        cells[1].outputs.append(new_output("error", ename=error[0], evalue=error[1], traceback=[]))
    nb = new_notebook(cells=cells, metadata={"papermill": {"duration": duration}})
    nbformat.write(nb, path)
    return path


def test_summarize_reads_question_verdict_time_and_nothing_else(tmp_path):
    nb = _planted(tmp_path / "99_planted.ipynb",
                  "a = 1\nb_c = [1, 2]\nnot a verdict line\n  indented = 3\nx == 2\nd = {'k': 'v'}\n")
    s = summarize(nb)
    assert (s.name, s.title, s.question) == ("99_planted", "99 · A planted notebook", "Does the report read this?")
    assert s.verdict == [("a", "1"), ("b_c", "[1, 2]"), ("d", "{'k': 'v'}")]  # not 'noise', printed before
    assert s.seconds == 12.5 and s.error is None


def test_a_failed_notebook_shows_its_error_not_a_verdict(tmp_path):
    s = summarize(_planted(tmp_path / "98_failed.ipynb", "", error=("ConfigError", "p=100 is not allowed")))
    assert s.error == "ConfigError: p=100 is not allowed"
    page = index_html([s])
    assert "FAILED: ConfigError: p=100 is not allowed" in page and "1 failed" in page


def test_index_escapes_what_notebooks_print(tmp_path):
    s = summarize(_planted(tmp_path / "97_html.ipynb", "tag = <script>alert(1)</script>\n"))
    page = index_html([s])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    q = index_html([replace(s, question="Does it *grok*, **fast**, with `x<y` and a*b? <b>")])
    assert "Does it <em>grok</em>, <strong>fast</strong>, with <code>x&lt;y</code> and a*b? &lt;b&gt;" in q


def test_write_report_refuses_a_non_notebook_and_writes_nothing(tmp_path):
    good = _planted(tmp_path / "99_planted.ipynb", "a = 1\n")
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{ not json")
    with pytest.raises(ReportError, match=r"notebook=.*broken\.ipynb.* is not allowed"):
        write_report([good, bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ReportError, match="notebooks="):
        write_report([], tmp_path / "out")


def test_write_report_renders_each_notebook_with_inline_figures(tmp_path):
    nb = ROOT / "notebooks" / "03_zoom_in.ipynb"  # committed with its executed outputs
    index = write_report([nb], tmp_path / "out")
    page = index.read_text()
    assert 'href="html/03_zoom_in.html"' in page and "key_freqs</span> = [" in page
    rendered = (tmp_path / "out" / "html" / "03_zoom_in.html").read_text()
    assert rendered.count("data:image/png;base64,") >= 3
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_main_job_writes_the_report_and_keeps_kernel_chatter_out(tmp_path):
    params = tmp_path / "small.yaml"
    params.write_text("03_zoom_in:\n  arch: mlp\n  act: quadratic\n  d_mlp: 64\n  op: sub\n  p: 23\n"
                      "  frac_train: 0.5\n  lr: 0.003\n  steps: 200\n  top_k: 3\n")
    env = {**os.environ, "SCIDL_STORE": str(tmp_path / "runs"), "SCIDL_LEDGER": str(tmp_path / "ledger.jsonl")}
    for name in ("CI", "SCIDL_PROGRESS"):  # bars would be on: the main job itself must turn them off
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(ROOT / "ci" / "run_notebooks.py"), "--params", str(params),
                           "--out", str(tmp_path / "out"), str(ROOT / "notebooks" / "03_zoom_in.ipynb")],
                          capture_output=True, text=True, env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "without encryption" not in output
    assert "without encryption" in (tmp_path / "out" / "kernels.log").read_text(), "the kernel's chatter went here"
    assert "03_zoom_in.ipynb done in" in output and "Report: " in output
    executed = summarize(tmp_path / "out" / "03_zoom_in.ipynb")
    assert executed.error is None and len(executed.verdict) >= 5
    page = (tmp_path / "out" / "index.html").read_text()
    assert all(f"{k}</span> = " in page for k, _ in executed.verdict)
    assert (tmp_path / "out" / "html" / "03_zoom_in.html").exists()
    assert f"(parameters from {params})" in page and "generated" in page
    text = (tmp_path / "out" / "03_zoom_in.ipynb").read_text()
    assert text.endswith("}\n"), "saved as JupyterLab saves it: opening it changes no byte"
    meta = nbformat.reads(text, as_version=4).metadata
    assert meta.kernelspec.display_name == "Python 3 (scidl)"
    assert meta.papermill.input_path == str(ROOT / "notebooks" / "03_zoom_in.ipynb"), "a path, not a copy"
    cells = nbformat.read(tmp_path / "out" / "03_zoom_in.ipynb", as_version=4).cells
    bars = [o for c in cells for o in c.get("outputs", []) if "it/s" in str(o)]
    assert bars == [], "the main job's kernels draw no progress bars into the notebooks"


@pytest.mark.parametrize("env, progress, shown", [
    ({}, True, True), ({}, False, False), ({"CI": "true"}, True, False), ({"CI": "1"}, True, False),
    ({"CI": "false"}, True, True), ({"SCIDL_PROGRESS": "0"}, True, False),
    ({"CI": "true", "SCIDL_PROGRESS": "1"}, True, True), ({"CI": "true", "SCIDL_PROGRESS": "1"}, False, False),
])
def test_progress_bars_are_silent_under_ci(env, progress, shown, monkeypatch):
    for name in ("CI", "SCIDL_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert progress_enabled(progress) is shown


@pytest.mark.parametrize("ci, bar", [("true", False), ("", True)])
def test_training_draws_a_bar_unless_under_ci(ci, bar, tiny_config, store, monkeypatch, capsys):
    monkeypatch.delenv("SCIDL_PROGRESS", raising=False)
    monkeypatch.setenv("CI", ci)
    train(tiny_config, store)
    assert (f"run {tiny_config.hash}" in capsys.readouterr().err) is bar


def test_write_report_refuses_a_bad_title_or_a_name_twice_and_writes_nothing(tmp_path):
    good = _planted(tmp_path / "99_planted.ipynb", "a = 1\n")
    (tmp_path / "other").mkdir()
    twin = _planted(tmp_path / "other" / "99_planted.ipynb", "a = 2\n")
    with pytest.raises(ReportError, match="must have distinct file names"):
        write_report([good, twin], tmp_path / "out")
    for title in (None, "", "  ", 3):
        with pytest.raises(ReportError, match="title="):
            write_report([good], tmp_path / "out", title=title)
    assert not (tmp_path / "out").exists()


def test_rendered_pages_run_no_script_a_notebook_put_there(tmp_path):
    nb = _planted(tmp_path / "96_script.ipynb", "a = 1\n")
    planted = nbformat.read(nb, as_version=4)
    planted.cells.append(new_markdown_cell("<script>alert('markdown')</script> <img src=x onerror=alert(2)>"))
    planted.cells.append(new_code_cell("...", outputs=[new_output(
        "display_data", data={"text/html": "<script>alert('output')</script><b>bold</b>", "text/plain": "b"})]))
    nbformat.write(planted, nb)
    write_report([nb], tmp_path / "out")
    page = (tmp_path / "out" / "html" / "96_script.html").read_text()
    for raw in ("<script>alert('markdown')", "<script>alert('output')", "<img src=x onerror", "<img src=\"x\" onerror"):
        assert raw not in page, raw  # escaped or removed: shown as text at most, never run
    assert "<b>bold</b>" in page  # harmless markup stays


def _png(width=640, height=480) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_index_renders_math_badges_and_thumbnails_offline(tmp_path):
    cells = [
        new_markdown_cell("# 98 · Math\n\n**Question.** Does $(a + b) \\bmod p$ grok, and is $\\sqrt{B C}$ a law? "
                          "It costs \\$5 and *this* stays $x$.\n"),
        new_code_cell("plot", outputs=[new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]),
        new_markdown_cell("## Verdict"),
        new_code_cell("...", outputs=[_stdout("verdicts = {'H0': 'supported', 'H1': 'refuted', 'H2': 'inconclusive (Holm)'}\n"
                                              "U6 = unstable\nsupportedness = 3\n")]),
    ]
    nb = tmp_path / "math.ipynb"
    nbformat.write(new_notebook(cells=cells, metadata={"papermill": {"duration": 3.0}}), nb)
    plain = _planted(tmp_path / "plain.ipynb", "x = 1\n")
    page = write_report([nb, plain], tmp_path / "out").read_text()
    assert page.count("<math ") == 3 and "<msqrt>" in page and "$(a + b)" not in page and "\\bmod" not in page
    assert "$5" in page and "<em>this</em>" in page  # an escaped dollar is text, emphasis still renders
    for word in ("supported", "refuted", "inconclusive", "unstable"):
        assert f'<span class="badge {word}">{word}</span>' in page
    assert "supportedness" in page and '<span class="badge supported">supportedness' not in page  # whole words only
    thumbs = [line for line in page.splitlines() if 'class="thumb"' in line]
    assert len(thumbs) == 1 and "key figure of math" in thumbs[0]  # the notebook without a figure has none
    import base64
    import io
    import re

    from PIL import Image

    data = re.search(r'src="data:image/png;base64,([^"]+)"', thumbs[0]).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (320, 240)  # scaled down, aspect kept
    assert "<script" not in page and "<link" not in page and not re.search(r'(src|href)="(https?:)?//', page)


def test_the_key_figure_is_the_last_one_before_the_verdict(tmp_path):
    cells = [new_markdown_cell("# t\n\n**Question.** q"),
             new_code_cell("a", outputs=[new_output("display_data", data={"image/png": _png(400, 100)})]),
             new_code_cell("b", outputs=[new_output("display_data", data={"image/png": _png(400, 400)})]),
             new_markdown_cell("## Verdict"),
             new_code_cell("c", outputs=[new_output("display_data", data={"image/png": _png(400, 200)}),
                                         _stdout("x = 1\n")])]
    nbformat.write(new_notebook(cells=cells), tmp_path / "t.ipynb")
    import base64
    import io

    from PIL import Image

    s = summarize(tmp_path / "t.ipynb")
    assert Image.open(io.BytesIO(base64.b64decode(s.figure))).size == (320, 320)
