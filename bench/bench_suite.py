"""The suite's time budget, measured: each executed notebook's papermill run time and the total.

Usage: python bench/bench_suite.py [FOLDER]   (default: notebooks/, whose committed outputs the main
job wrote; or the OUT folder of `bash ci/main.sh OUT`, or of `--paper OUT`)
Prints one line per notebook (`NN_name_s = seconds`, flagged when over the 4-minute budget of a
notebook's quick defaults) and `total_s = ...`. A notebook without papermill's duration is listed
as not executed by papermill.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scidl.report import summarize

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 240.0  # a notebook's quick defaults: at most 4 minutes on 2 cores


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT / "notebooks")
    ap.add_argument("--budget", type=float, default=BUDGET_S,
                    help="flag notebooks slower than this many seconds (default 240, the quick defaults' "
                         "budget; 0: no budget, e.g. for a --paper run)")
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"folder={str(args.folder)!r} is not allowed: it does not exist (give the OUT folder of "
                 f"`bash ci/main.sh OUT`, or notebooks/)")
    notebooks = sorted(args.folder.glob("[0-9]*.ipynb"))
    if not notebooks:
        sys.exit(f"folder={str(args.folder)!r} is not allowed: it holds no executed NN_*.ipynb notebooks")
    summaries = [summarize(nb) for nb in notebooks]
    timed = [s for s in summaries if s.seconds is not None]
    total = sum(s.seconds for s in timed)
    print(f"{'notebook':<28} {'seconds':>8} {'minutes':>8}")
    for s in summaries:
        if s.seconds is None:
            print(f"{s.name:<28} {'-':>8} {'-':>8}  not executed by papermill")
            continue
        flag = (f"  over the {args.budget:.0f}-s budget" if 0 < args.budget < s.seconds else "") + ("  FAILED" if s.error else "")
        print(f"{s.name:<28} {s.seconds:8.0f} {s.seconds / 60:8.1f}{flag}")
    print(f"{'total':<28} {total:8.0f} {total / 60:8.1f}\n")
    for s in timed:
        print(f"{s.name}_s = {s.seconds:.0f}")
    print(f"total_s = {total:.0f}")
    if args.budget > 0:
        print(f"over_budget = {sum(s.seconds > args.budget for s in timed)}")
    return 1 if len(timed) < len(summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
