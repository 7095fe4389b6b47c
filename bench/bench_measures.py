"""Time Nanda et al.'s progress measures per checkpoint at p=113.

Usage: python bench/bench_measures.py [--threads 2] [--checkpoints 10] [--p 113]
Trains a short run of the paper's transformer with that many checkpoints into a temporary store
(the cost of a measure does not depend on how far training went), then times, in the same process:
- scidl: `progress_measures(run, key_freqs)`, one grid forward per checkpoint shared by every measure;
- reference: every measure called on its own (`MEASURES[name](model, Context(...))`), each with its
  own grid forward, as a plain implementation would.
Prints `measure_s_per_checkpoint = ...` (goal <= 0.3), `reference_s_per_checkpoint = ...` and the ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import scidl
from scidl.phenomena.grokking.measures import MEASURES, Context, progress_measures
from scidl.store import RunStore
from scidl.phenomena.grokking.task import make_dataset

KEY_FREQS = [1, 6, 21, 29, 33]  # notebook 01's run; any non-empty set costs the same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--p", type=int, default=113)
    args = ap.parse_args()
    scidl.configure_torch(args.threads)
    every = 5
    config = scidl.make_config(p=args.p, frac_train=0.3, weight_decay=1.0, steps=every * (args.checkpoints - 1),
                               checkpoint_every=every, eval_every=every)
    with tempfile.TemporaryDirectory() as tmp:
        run = scidl.train(config, RunStore(tmp), progress=False)
        n = len(run.checkpoint_steps)
        progress_measures(run, KEY_FREQS, progress=False)  # warm-up
        start = time.perf_counter()
        progress_measures(run, KEY_FREQS, progress=False)
        ours = (time.perf_counter() - start) / n
        ctx = Context(make_dataset(config.task), tuple(KEY_FREQS), config.task.op)
        start = time.perf_counter()
        for step in run.checkpoint_steps:
            model = run.load_model(step)
            for fn in MEASURES.values():
                fn(model, ctx)
        reference = (time.perf_counter() - start) / n
    print(f"p={args.p} checkpoints={n} threads={args.threads} measures={list(MEASURES)}")
    print(f"reference_s_per_checkpoint = {reference:.3f}")
    print(f"measure_s_per_checkpoint = {ours:.3f}")
    print(f"speedup = {reference / ours:.2f}x")


if __name__ == "__main__":
    main()
