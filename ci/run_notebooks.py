"""Execute every notebook in notebooks/ with papermill into one folder; extract its figures; write
the HTML report (OUT/index.html, OUT/html/*.html)."""
from __future__ import annotations

import argparse
import base64
import contextlib
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
from jupyter_client.kernelspec import KernelSpecManager
import yaml

from scidl.progressbar import progress_enabled
from scidl.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def extract_figures(notebook: Path, figures: Path) -> int:
    """Write every PNG output of an executed notebook to figures/<notebook>_cellNN_K.png."""
    nb = nbformat.read(notebook, as_version=4)
    count = 0
    for i, cell in enumerate(nb.cells):
        for k, out in enumerate(cell.get("outputs", [])):
            png = out.get("data", {}).get("image/png")
            if png:
                name = f"{notebook.stem}_cell{i:02d}_{k}.png"
                (figures / name).write_bytes(base64.b64decode(png))
                count += 1
    return count


@contextlib.contextmanager
def kernel_stderr_to(path: Path):
    """Send this process's stderr (inherited by the kernels it starts) to `path`, so kernel start-up
    chatter ("Kernel is running over TCP without encryption") stays out of the terminal; yield a
    file that still writes to the terminal (for papermill's progress bar)."""
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stderr.flush()
            terminal.close()
            os.dup2(saved, 2)
            os.close(saved)


def prepared(notebook: Path) -> nbformat.NotebookNode:
    """Return `notebook` ready to execute: the kernelspec of the python3 kernel it runs on (the
    project's, installed by ci/setup_env.sh), as JupyterLab would write it, and no widget state left
    over from an earlier execution (nbclient stores this run's)."""
    spec = KernelSpecManager().get_kernel_spec("python3")
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata["kernelspec"] = {"display_name": spec.display_name, "language": spec.language, "name": "python3"}
    nb.metadata.pop("widgets", None)
    return nb


def finish(path: Path, source: Path) -> None:
    """Record `source` as papermill's input path (given a notebook object, papermill stores the whole
    input notebook there, old outputs included) and end the file with a newline, as JupyterLab saves
    notebooks: opening one changes no byte."""
    nb = nbformat.read(path, as_version=4)
    if not isinstance(nb.metadata.get("papermill", {}).get("input_path", ""), str):
        nb.metadata.papermill.input_path = str(source)
        nbformat.write(nb, path)
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        path.write_text(text + "\n", encoding="utf-8")


def read_yaml(path: Path):
    """Return the YAML in `path`, or exit with a message naming the file and the line at fault."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as e:
        sys.exit(f"{path}: cannot be read ({e.strerror})")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        sys.exit(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "out", help="output folder")
    ap.add_argument("--params", type=Path, default=None,
                    help="YAML {notebook stem: {param: value}} overrides (e.g. ci/small_params.yaml)")
    ap.add_argument("--paper", action="store_true",
                    help="use each notebook's paper-scale parameters (notebooks/<name>.paper.yaml)")
    ap.add_argument("--inplace", action="store_true",
                    help="write outputs back into notebooks/ (to refresh the committed outputs)")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = ap.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    overrides = read_yaml(args.params) if args.params else {}
    if args.paper:
        overrides = {nb.stem: read_yaml(nb.with_suffix(".paper.yaml")) or {}
                     for nb in notebooks if nb.with_suffix(".paper.yaml").exists()}
    unknown = sorted(set(overrides) - {nb.stem for nb in notebooks}) if isinstance(overrides, dict) else []
    if not isinstance(overrides, dict) or unknown or not all(isinstance(v, dict) for v in overrides.values()):
        sys.exit(f"--params {args.params}: must map notebook names {[nb.stem for nb in notebooks]} to "
                 f"{{parameter: value}} mappings (unknown: {unknown})")
    out = args.out.resolve()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    # kernels draw no progress bars into the notebooks (nbval compares outputs, and the report would
    # show bars frozen at 0 %); the terminal shows papermill's per-cell bar instead, unless CI=true
    show_bar = progress_enabled(True)
    os.environ.setdefault("SCIDL_PROGRESS", "0")
    failed, executed = [], []
    for i, nb in enumerate(notebooks, 1):
        target, start = (nb if args.inplace else out / nb.name), time.perf_counter()
        print(f"[{i}/{len(notebooks)}] {nb.name} ...", flush=True)
        if not args.inplace:
            target.unlink(missing_ok=True)  # the report never shows an earlier run's notebook
        try:
            with kernel_stderr_to(out / "kernels.log") as terminal:
                bar = {"file": terminal, "desc": nb.stem, "leave": False} if show_bar else False
                pm.execute_notebook(prepared(nb), str(target), parameters=overrides.get(nb.stem, {}),
                                    cwd=str(nb.parent), progress_bar=bar, kernel_name="python3")
        except Exception as err:  # a cell's error, a dead kernel, ...: report it and go on
            failed.append(nb.name)
            what = f"{err.ename}: {err.evalue}" if isinstance(err, pm.PapermillExecutionError) \
                else f"{type(err).__name__}: {err}"
            print(f"[{i}/{len(notebooks)}] {nb.name} FAILED after {time.perf_counter() - start:.0f}s: {what}",
                  flush=True)
        else:
            n_fig = extract_figures(target, out / "figures")
            print(f"[{i}/{len(notebooks)}] {nb.name} done in {time.perf_counter() - start:.0f}s, "
                  f"{n_fig} figures", flush=True)
        if target.exists():
            finish(target, nb)
            executed.append(target)
    scale = "paper-scale parameters" if args.paper else f"parameters from {args.params}" if args.params \
        else "quick-scale defaults"
    report = write_report(executed, out, title=f"scidl notebooks ({scale})") if executed else None
    print(f"Report: {report}\nExecuted notebooks: {out}\nFigures: {out / 'figures'}\n"
          f"Kernel logs: {out / 'kernels.log'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
