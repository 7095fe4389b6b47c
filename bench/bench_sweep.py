"""Model-steps per second for a sweep: batched ensemble vs sequential loop vs worker processes.

Usage: python bench/bench_sweep.py [--steps 200]
For a small (p=31, width 128) and a large (p=97, width 512) one-hot MLP, trains K seeds each way
in a fresh temporary store and prints model-steps/s and the ratio to the sequential loop, plus the
path the sweep's planner picks by itself. Then the same for K seeds of Nanda's transformer at p=59
(notebook 05's fresh seeds), sequential vs worker processes: its step is bound by its matrix
products (bench_step.py's `limit_ms`), so no batching is offered and the planner runs them one by one.
"""
from __future__ import annotations

import argparse
import tempfile
import time


from scidl.config import make_config
from scidl.ensemble import train_ensemble
from scidl.store import RunStore
from scidl.sweep import plan, run_sweep
from scidl.train import configure_torch, train

SIZES = {"small": dict(p=31, d_mlp=128, K=16), "large": dict(p=97, d_mlp=512, K=4),
         "transformer": dict(p=59, K=4)}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(size: str, steps: int) -> None:
    s = SIZES[size]
    if size == "transformer":
        base = make_config(p=s["p"], frac_train=0.5, steps=steps, eval_every=50, checkpoint_every=0)
    else:
        base = make_config(p=s["p"], arch="mlp", d_mlp=s["d_mlp"], act="quadratic", lr=3e-3, frac_train=0.5,
                           steps=steps, eval_every=50, checkpoint_every=0)
    configs = [base.replace(seed=i) for i in range(s["K"])]
    work = s["K"] * steps
    bat = None
    with tempfile.TemporaryDirectory() as d:
        seq = timed(lambda: [train(c, RunStore(f"{d}/seq"), progress=False) for c in configs])
        if size != "transformer":
            bat = timed(lambda: train_ensemble(configs, RunStore(f"{d}/batched"), progress=False))
        proc = timed(lambda: run_sweep(configs, RunStore(f"{d}/proc"), executor="processes", workers=2,
                                       batch=False, progress=False))
    picked = "batched" if len(plan(configs)[0]) > 1 else "one run per task"
    print(f"{size}: p={s['p']} width={s.get('d_mlp', base.model.d_mlp)} K={s['K']} steps={steps} "
          f"(sweep planner picks: {picked})")
    for name, sec in (("sequential loop (2 threads)", seq), ("batched ensemble (2 threads)", bat),
                      ("2 worker processes (1 thread each)", proc)):
        if sec is None:
            continue
        print(f"  {name:36s} {work / sec:8.0f} model-steps/s  ratio {seq / sec:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    configure_torch(2)  # what the notebooks run under
    for size in SIZES:
        bench(size, args.steps)


if __name__ == "__main__":
    main()
