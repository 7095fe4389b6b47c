"""Do the notebooks' verdicts survive numerics? Re-execute notebooks on a second numeric path and
compare every Verdict line with the committed notebook (computed on the pinned path).

Usage (after `source ci/setup_env.sh`):
    python ci/verdict_stability.py OUT [--path native|threads1] [notebooks/NN_*.ipynb ...]
    python ci/verdict_stability.py OUT --compare FIRST_DIR SECOND_DIR   (two executions made already)
  --path native    each library's own fastest path for this CPU (SCIDL_NUMERICS=native, no preload)
  --path threads1  the pinned path with one thread instead of the notebooks' two (papermill threads=1)
Writes OUT/<path>/*.ipynb (the second execution, its own fresh run store and ledger) and
OUT/stability_<path>.md: per notebook, each Verdict line, its committed and its second value, and
"stable" or "UNSTABLE". A line that differs is a verdict that the last bits of a matmul decide:
report it as unstable, not as a finding. Exit status 0 when the comparison was made (unstable
lines are a result, not an error), 1 when a notebook failed to execute.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from scidl._numerics import PINS

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("native", "threads1")
PINNED = (*PINS, "LD_PRELOAD")  # what the native path drops: the pins and the MKL vendor preload


def compare(first: list[tuple[str, str]], second: list[tuple[str, str]]) -> list[tuple[str, str, str, bool]]:
    """Return (name, committed value, second value, stable) for every Verdict name in either list;
    a line missing on one side is unstable (its value shows as '(missing)')."""
    a, b = dict(first), dict(second)
    names = list(a) + [n for n in b if n not in a]
    return [(n, a.get(n, "(missing)"), b.get(n, "(missing)"), a.get(n) == b.get(n)) for n in names]


def second_env(path: str) -> dict[str, str]:
    env = dict(os.environ)
    if path == "native":
        for name in PINNED:
            env.pop(name, None)
        env["SCIDL_NUMERICS"] = "native"
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--path", choices=PATHS, default="native", help="the second numeric path")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("FIRST_DIR", "SECOND_DIR"),
                    help="compare the executed notebooks of two folders instead of executing")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = ap.parse_intermixed_args()  # notebooks may follow the options
    if args.compare:
        first, second = args.compare
        names = sorted(p.name for p in first.glob("[0-9]*.ipynb") if (second / p.name).exists())
        if not names:
            sys.exit(f"--compare {first} {second} is not allowed: no notebook name is in both folders")
        report, unstable = write_report(args.out, f"{first} vs {second}", second.name,
                                        [(first / n, second / n) for n in names])
        print(f"Stability report: {report} ({unstable} unstable line(s))")
        return 0

    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(nb) for nb in notebooks if not nb.is_file()]
    if missing:
        sys.exit(f"notebooks={missing} is not allowed: each must be an existing notebook file")
    out = (args.out / args.path).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.yaml"
    params.write_text("".join(f"{nb.stem}: {{threads: 1}}\n" for nb in notebooks) if args.path == "threads1" else "{}\n")
    env = {**second_env(args.path), "SCIDL_STORE": str(out / "runs"), "SCIDL_LEDGER": str(out / "ledger.jsonl")}
    status = subprocess.run([sys.executable, str(ROOT / "ci" / "run_notebooks.py"), "--out", str(out),
                             "--params", str(params), *map(str, notebooks)], env=env).returncode
    report, unstable = write_report(args.out, f"committed (pinned path, 2 threads) vs `{args.path}`",
                                    args.path, [(nb, out / nb.name) for nb in notebooks])
    print(f"Stability report: {report} ({unstable} unstable line(s))")
    return 1 if status else 0


def write_report(out: Path, title: str, label: str, pairs: list[tuple[Path, Path]]) -> tuple[Path, int]:
    """Write OUT/stability_<label>.md comparing each (first, second) executed notebook's Verdict lines;
    return its path and the number of unstable lines."""
    from scidl.report import summarize

    lines, unstable = [f"# Verdict stability: {title}\n"], 0
    for first, second in pairs:
        if not second.exists():
            lines.append(f"\n## {first.stem}\n\nnot executed on the second path\n")
            continue
        rows = compare(summarize(first).verdict, summarize(second).verdict)
        unstable += sum(not ok for *_, ok in rows)
        lines.append(f"\n## {first.stem}: {sum(ok for *_, ok in rows)} of {len(rows)} lines stable\n\n"
                     f"| line | first | {label} | |\n| --- | --- | --- | --- |\n")
        lines += [f"| `{n}` | {a} | {b} | {'stable' if ok else '**UNSTABLE**'} |\n" for n, a, b, ok in rows]
    lines.append(f"\n{unstable} unstable line(s).\n")
    out.mkdir(parents=True, exist_ok=True)
    report = out.resolve() / f"stability_{label}.md"
    report.write_text("".join(lines))
    return report, unstable


if __name__ == "__main__":
    sys.exit(main())
