"""An HTML report of a folder of executed notebooks, one page a person can open and read.

`write_report(notebooks, out)` renders every executed notebook to `out/html/<name>.html` with
nbconvert (figures inline, as data URIs) and writes `out/index.html`: one row per notebook with its
question (the `**Question.**` paragraph of its first cell), its Verdict lines (`name = value`, as
printed by the code under its `## Verdict` heading, read from the executed outputs, never recomputed
here), its run time (papermill's `duration`) and a link to the rendered notebook. A notebook that
failed shows the error papermill recorded instead of a verdict. Both pages work offline.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from scidl.errors import ScidlError, not_allowed
from scidl.store import atomic_write_bytes

VERDICT_HEADING = re.compile(r"^\s*#+\s*Verdict\b", re.IGNORECASE)
VERDICT_LINE = re.compile(r"^([A-Za-z_][\w.]*)\s=\s(.*\S)\s*$")
QUESTION = re.compile(r"\*\*Question\.\*\*\s*(.*?)(?:\n\s*\n|\Z)", re.DOTALL)


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


def summarize(path: Path | str) -> NotebookSummary:
    """Return the title, question, Verdict lines, duration and error of the executed notebook `path`."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as e:
        raise ReportError(not_allowed("notebook", str(path), f"must be a readable .ipynb file ({e})")) from e
    cells = nb.cells
    first = next((c.source for c in cells if c.cell_type == "markdown"), "")
    title = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("#")), path.stem)
    question = QUESTION.search(first)
    verdict, in_verdict, error = [], False, None
    for cell in cells:
        if cell.cell_type == "markdown":
            if VERDICT_HEADING.match(cell.source):
                in_verdict = True
            elif cell.source.lstrip().startswith("#"):
                in_verdict = False  # a later section
            continue
        expected = "raises-exception" in cell.metadata.get("tags", [])  # nbval's tag for a wanted error
        for out in cell.get("outputs", []):
            if out.output_type == "error" and error is None and not expected:
                error = f"{out.ename}: {out.evalue}"
            if in_verdict and out.output_type == "stream" and out.name == "stdout":
                verdict += [(m.group(1), m.group(2)) for m in map(VERDICT_LINE.match, out.text.splitlines()) if m]
    papermill = nb.metadata.get("papermill", {})
    if error is None and papermill.get("exception"):
        error = "papermill recorded an exception (the kernel died or the run was stopped)"
    seconds = papermill.get("duration")
    return NotebookSummary(path.stem, title, " ".join(question.group(1).split()) if question else "",
                           verdict, float(seconds) if seconds is not None else None, error)


def render_html(path: Path | str, target: Path | str) -> Path:
    """Render the executed notebook `path` to the standalone HTML file `target` (figures inline)."""
    from nbconvert import HTMLExporter  # imported here: nbconvert is slow to import

    # sanitized: markdown cells and text/html outputs lose scripts and event handlers, so opening a
    # page runs nothing a notebook put there (figures stay: they are images)
    body, _ = HTMLExporter(template_name="lab", sanitize_html=True).from_filename(str(path))
    return _write_atomic(Path(target), body)


def write_report(notebooks: list[Path | str], out: Path | str, title: str = "scidl notebooks") -> Path:
    """Render `notebooks` into `out/html/` and write the index `out/index.html`; return its path."""
    if isinstance(notebooks, (str, Path)) or not notebooks:
        raise ReportError(not_allowed("notebooks", notebooks, "must be a non-empty list of executed .ipynb paths"))
    if not isinstance(title, str) or not title.strip():
        raise ReportError(not_allowed("title", title, "must be a non-empty string"))
    names = [Path(nb).stem for nb in notebooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # their pages would overwrite each other under html/
        raise ReportError(not_allowed("notebooks", [str(nb) for nb in notebooks if Path(nb).stem in twice],
                                      f"must have distinct file names: {twice} appear more than once"))
    out = Path(out)
    summaries = [summarize(nb) for nb in notebooks]  # every notebook is read before anything is written
    (out / "html").mkdir(parents=True, exist_ok=True)
    for nb, s in zip(notebooks, summaries):
        render_html(nb, out / "html" / f"{s.name}.html")
    return _write_atomic(out / "index.html", index_html(summaries, title))


def _inline_markdown(text: str) -> str:
    """Escape `text`, then render Markdown's **strong**, *emphasis* and `code` (math stays as typed)."""
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
    esc = html.escape
    total = sum(s.seconds or 0.0 for s in summaries)
    rows = []
    for s in summaries:
        if s.error:
            verdict = f'<p class="failed">FAILED: {esc(s.error)}</p>'
        elif s.verdict:
            verdict = "<pre class=\"verdict\">" + "\n".join(
                f'<span class="name">{esc(k)}</span> = {esc(v)}' for k, v in s.verdict) + "</pre>"
        else:
            verdict = '<p class="failed">no Verdict lines found</p>'
        rows.append(
            f'<tr id="{esc(s.name)}"><td><a href="html/{esc(s.name)}.html">{esc(s.name)}</a>'
            f'<div class="title">{esc(s.title)}</div></td>'
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
</style></head><body>
<h1>{esc(title)}</h1>
<p>{status}, total run time {_format_seconds(total)}, generated {generated}. Each verdict is printed by the run of its notebook;
click a name for the executed notebook with its figures.</p>
<table><thead><tr><th>notebook</th><th>question</th><th>verdict</th><th>time</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def _write_atomic(target: Path, text: str) -> Path:
    atomic_write_bytes(target, text.encode("utf-8"))
    return target
