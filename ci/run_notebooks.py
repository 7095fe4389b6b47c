"""Execute every notebook in notebooks/ with papermill into one folder; extract its figures."""
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
import yaml

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
    chatter ("Kernel is running over TCP without encryption") stays out of the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


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
    failed = []
    for i, nb in enumerate(notebooks, 1):
        target, start = (nb if args.inplace else out / nb.name), time.perf_counter()
        print(f"[{i}/{len(notebooks)}] {nb.name} ...", flush=True)
        try:
            with kernel_stderr_to(out / "kernels.log"):
                pm.execute_notebook(str(nb), str(target), parameters=overrides.get(nb.stem, {}),
                                    cwd=str(nb.parent), progress_bar=False, kernel_name="python3")
        except pm.PapermillExecutionError as err:
            failed.append(nb.name)
            print(f"[{i}/{len(notebooks)}] {nb.name} FAILED: {err.ename}: {err.evalue}", flush=True)
            continue
        n_fig = extract_figures(target, out / "figures")
        print(f"[{i}/{len(notebooks)}] {nb.name} done in {time.perf_counter() - start:.0f}s, "
              f"{n_fig} figures", flush=True)
    print(f"Executed notebooks: {out}\nFigures: {out / 'figures'}\nKernel logs: {out / 'kernels.log'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
