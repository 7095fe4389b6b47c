"""An HTML report of a folder of executed notebooks, one page a person can open and read.

`write_report(notebooks, out)` renders every executed notebook to `out/html/<name>.html` with
nbconvert (figures inline, as data URIs) and writes `out/index.html`: one row per notebook with its
question (the `**Question.**` paragraph of its first cell), its Verdict lines (`name = value`, as
printed by the code under its `## Verdict` heading, read from the executed outputs, never recomputed
here), its run time (papermill's `duration`), its key figure as a thumbnail (the last figure before
its Verdict) and a link to the rendered notebook. The questions' `$...$` math is rendered as MathML
(latex2mathml; browsers draw it natively), and each hypothesis verdict word (supported, refuted,
inconclusive, unstable, untested) is a coloured badge. A notebook that failed shows the error
papermill recorded instead of a verdict. Both pages work offline: no script, font or CDN is loaded.
Every notebook is read, checked and rendered before the first file is written.
"""
from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat

from scidl.errors import ScidlError, describe, not_allowed
from scidl.store import atomic_write_bytes

VERDICT_HEADING = re.compile(r"^\s*#+\s*Verdict\b", re.IGNORECASE)
VERDICT_LINE = re.compile(r"^([A-Za-z_][\w.]*)\s=\s(.*\S)\s*$")
QUESTION = re.compile(r"\*\*Question\.\*\*\s*(.*?)(?:\n\s*\n|\Z)", re.DOTALL)
MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$(?!\$)")  # inline $...$ (not $$, not an escaped \$)
BADGES = ("supported", "refuted", "inconclusive", "unstable", "untested")
BADGE = re.compile(r"\b(" + "|".join(BADGES) + r")\b")
THUMB_WIDTH = 320  # pixels: the index's figure thumbnails


class ReportError(ScidlError):
    """A notebook given to the report cannot be read as an executed notebook."""


@dataclass(frozen=True)
class NotebookSummary:
    """What the index shows of one executed notebook."""

    name: str
    title: str
    question: str
    verdict: list[tuple[str, str]] = field(default_factory=list)
    seconds: float | None = None
    error: str | None = None  # "ename: evalue" of the first error output, if the run failed
    figure: str | None = None  # the key figure (the last PNG before the Verdict), a base64 PNG thumbnail


def _read(path: Any) -> Any:
    """Return the notebook at `path`, read and validated (ReportError naming it otherwise)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ReportError(not_allowed("notebook", path, "must be the path of an executed .ipynb file"))
    path = Path(path)
    if path.suffix != ".ipynb":
        raise ReportError(not_allowed("notebook", str(path), "must be an .ipynb file"))
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # OSError, JSON errors, nbformat's and jsonschema's validation errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ReportError(not_allowed("notebook", str(path), f"must be a readable, valid .ipynb file ({first})")) \
            from None
    return nb


def summarize(path: Path | str) -> NotebookSummary:
    """Return the title, question, Verdict lines, duration, error and key figure of the executed
    notebook `path`."""
    nb = _read(path)
    path = Path(path)
    cells = nb.cells
    first = next((c.source for c in cells if c.cell_type == "markdown"), "")
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("#")), path.stem)
    question = QUESTION.search(first)
    verdict, in_verdict, seen_verdict, error, figure = [], False, False, None, None
    for cell in cells:
        if cell.cell_type == "markdown":
            if VERDICT_HEADING.match(cell.source):
                in_verdict = seen_verdict = True
            elif cell.source.lstrip().startswith("#"):
                in_verdict = False  # a later section
            continue
        expected = "raises-exception" in cell.metadata.get("tags", [])  # nbval's tag for a wanted error
        for out in cell.get("outputs", []):
            if out.output_type == "error" and error is None and not expected:
                error = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
            if in_verdict and out.output_type == "stream" and out.name == "stdout":
                verdict += [(m.group(1), m.group(2)) for m in map(VERDICT_LINE.match, out.text.splitlines()) if m]
            if not seen_verdict and out.output_type in ("display_data", "execute_result") \
                    and "image/png" in out.get("data", {}):
                figure = out.data["image/png"]
    papermill = nb.metadata.get("papermill", {})
    if not isinstance(papermill, dict):
        raise ReportError(not_allowed(f"notebook {path} metadata.papermill", papermill, "must be a mapping"))
    if error is None and papermill.get("exception"):
        error = "papermill recorded an exception (the kernel died or the run was stopped)"
    seconds = papermill.get("duration")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
                                or not math.isfinite(seconds) or seconds < 0):
        raise ReportError(not_allowed(f"notebook {path} metadata.papermill.duration", seconds,
                                      "must be a finite number of seconds >= 0 (or absent)"))
    return NotebookSummary(path.stem, title, " ".join(question.group(1).split()) if question else "",
                           verdict, float(seconds) if seconds is not None else None, error, _thumbnail(figure))


def _thumbnail(png_b64: Any) -> str | None:
    """Return the base64 PNG `png_b64` scaled down to THUMB_WIDTH pixels wide (None if there is none
    or it cannot be decoded: a missing thumbnail is not a failed notebook)."""
    if not isinstance(png_b64, str):
        return None
    try:
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(png_b64)))
        if image.width > THUMB_WIDTH:
            image = image.resize((THUMB_WIDTH, max(1, round(image.height * THUMB_WIDTH / image.width))),
                                 Image.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # PIL raises its own types for damaged images
        return None


def _render(path: Path | str) -> str:
    """Return the executed notebook `path` as one standalone HTML page (figures inline)."""
    from nbconvert import HTMLExporter  # imported here: nbconvert is slow to import

    nb = _read(path)
    # sanitized: markdown cells and text/html outputs lose scripts and event handlers, so opening a
    # page runs nothing a notebook put there (figures stay: they are images)
    try:
        body, _ = HTMLExporter(template_name="lab", sanitize_html=True).from_notebook_node(nb)
    except Exception as e:  # nbconvert's own errors on a notebook it cannot render
        raise ReportError(not_allowed("notebook", str(path), f"cannot be rendered ({type(e).__name__}: {e})")) \
            from None
    return body


def render_html(path: Path | str, target: Path | str) -> Path:
    """Render the executed notebook `path` to the standalone HTML file `target` (figures inline)."""
    if not isinstance(target, (str, os.PathLike)):
        raise ReportError(not_allowed("target", target, "must be a file path"))
    return _write_atomic(Path(target), _render(path))


def write_report(notebooks: list[Path | str], out: Path | str, title: str = "scidl notebooks") -> Path:
    """Render `notebooks` into `out/html/` and write the index `out/index.html`; return its path."""
    if isinstance(notebooks, (str, bytes, os.PathLike)) or not isinstance(notebooks, (list, tuple)) or not notebooks:
        raise ReportError(not_allowed("notebooks", notebooks, "must be a non-empty list of executed .ipynb paths"))
    for nb in notebooks:
        if not isinstance(nb, (str, os.PathLike)):
            raise ReportError(not_allowed("notebooks[]", nb, "must be the path of an executed .ipynb file"))
    if not isinstance(title, str) or not title.strip():
        raise ReportError(not_allowed("title", title, "must be a non-empty string"))
    if not isinstance(out, (str, os.PathLike)):
        raise ReportError(not_allowed("out", out, "must be a folder path"))
    if Path(out).exists() and not Path(out).is_dir():
        raise ReportError(not_allowed("out", str(out), "is a file; the report needs a folder"))
    names = [Path(nb).stem for nb in notebooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # their pages would overwrite each other under html/
        raise ReportError(not_allowed("notebooks", [str(nb) for nb in notebooks if Path(nb).stem in twice],
                                      f"must have distinct file names: {twice} appear more than once"))
    out = Path(out)
    summaries = [summarize(nb) for nb in notebooks]  # every notebook is read, checked and rendered
    pages = [_render(nb) for nb in notebooks]        # before anything is written
    index = index_html(summaries, title)
    try:
        (out / "html").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(not_allowed("out", str(out), f"cannot be created as a folder ({e})")) from None
    for s, page in zip(summaries, pages):
        _write_atomic(out / "html" / f"{s.name}.html", page)
    return _write_atomic(out / "index.html", index)


def _inline_markdown(text: str) -> str:
    """Escape `text`, then render Markdown's **strong**, *emphasis* and `code`, and `$...$` math as
    MathML (math that latex2mathml cannot read stays as typed, escaped, in <code>)."""
    parts = MATH.split(text)  # even items: text; odd items: the math between $ signs
    return "".join(_math(p) if i % 2 else _markdown(p) for i, p in enumerate(parts))


def _math(latex: str) -> str:
    from latex2mathml.converter import convert

    try:
        return convert(latex)
    except Exception:  # latex2mathml raises its own types for LaTeX it does not know
        return f"<code>${html.escape(latex)}$</code>"


def _markdown(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def index_html(summaries: list[NotebookSummary], title: str = "scidl notebooks") -> str:
    """Return the index page for `summaries` (pure: no file is read or written)."""
    if not isinstance(summaries, (list, tuple)) or not summaries \
            or not all(isinstance(s, NotebookSummary) for s in summaries):
        raise ReportError(not_allowed("summaries", summaries, "must be a non-empty list of NotebookSummary "
                                      "(report.summarize)"))
    if not isinstance(title, str) or not title.strip():
        raise ReportError(not_allowed("title", title, "must be a non-empty string"))
    esc = html.escape
    total = sum(s.seconds or 0.0 for s in summaries)
    rows = []
    for s in summaries:
        if s.error:
            verdict = f'<p class="failed">FAILED: {esc(s.error)}</p>'
        elif s.verdict:
            verdict = "<pre class=\"verdict\">" + "\n".join(
                f'<span class="name">{esc(k)}</span> = {_badges(esc(v))}' for k, v in s.verdict) + "</pre>"
        else:
            verdict = '<p class="failed">no Verdict lines found</p>'
        rows.append(
            f'<tr id="{esc(s.name)}"><td><a href="html/{esc(s.name)}.html">{esc(s.name)}</a>'
            f'<div class="title">{esc(s.title)}</div>'
            + (f'<a href="html/{esc(s.name)}.html"><img class="thumb" alt="key figure of {esc(s.name)}" '
               f'src="data:image/png;base64,{s.figure}"></a>' if s.figure else "") + "</td>"
            f"<td>{_inline_markdown(s.question)}</td><td>{verdict}</td>"
            f'<td class="time">{_format_seconds(s.seconds)}</td></tr>')
    n_failed = sum(bool(s.error) for s in summaries)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    status = f"{len(summaries)} notebooks, {n_failed} failed" if n_failed else f"{len(summaries)} notebooks"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .6em; vertical-align: top; text-align: left; }}
td.time {{ text-align: right; white-space: nowrap; }}
.title {{ color: #555; font-size: .9em; max-width: 16em; }}
pre.verdict {{ margin: 0; font-size: .85em; white-space: pre-wrap; }}
.name {{ color: #05a; }}
.failed {{ color: #b00; font-weight: bold; }}
img.thumb {{ display: block; margin-top: .5em; width: {THUMB_WIDTH // 2 + 40}px; border: 1px solid #ddd; }}
.badge {{ border-radius: .7em; padding: 0 .45em; color: #fff; font-weight: 600; }}
.badge.supported {{ background: #1a7f37; }} .badge.refuted {{ background: #cf222e; }}
.badge.inconclusive {{ background: #9a6700; }} .badge.unstable {{ background: #8250df; }}
.badge.untested {{ background: #6e7781; }}
math {{ font-size: 1.05em; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{status}, total run time {_format_seconds(total)}, generated {generated}. Each verdict is printed by the run of its notebook;
click a name for the executed notebook with its figures.</p>
<table><thead><tr><th>notebook</th><th>question</th><th>verdict</th><th>time</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def _badges(escaped: str) -> str:
    """Return escaped verdict text with each verdict word (supported, refuted, ...) as a badge."""
    return BADGE.sub(lambda m: f'<span class="badge {m.group(1)}">{m.group(1)}</span>', escaped)


def _write_atomic(target: Path, text: str) -> Path:
    atomic_write_bytes(target, text.encode("utf-8"))
    return target
