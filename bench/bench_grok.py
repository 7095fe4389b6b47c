"""Wall-clock time for the paper's default transformer (p=113) to grok, with scidl's training loop.

Usage: python bench/bench_grok.py [--threads 2] [--steps 6000]
Trains `scidl.make_config()` (the defaults of notebook 01: p=113, 30% of pairs, AdamW lr 1e-3,
wd 1, float64 loss) with `scidl.train` in a temporary store: evaluation every `eval_every` steps
and checkpoints included. Prints:
- `grok_step = ...`: first evaluated step with test accuracy >= 0.99 (`scidl.grokking_summary`);
- `time_to_grok_s = ...`: the run's own training seconds up to that step (train_seconds x
  grok_step / steps: every step costs the same);
- `plain_time_to_grok_s = ...`: grok_step x the plain all-positions step's time, measured in this
  run (bench_step.py's reference), i.e. the same training with the reference step;
- `speedup`: their ratio.
"""
from __future__ import annotations

import argparse
import tempfile

import scidl
from scidl.registry import make_model
from scidl.store import RunStore
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import cross_entropy

from bench_step import reference_logits, time_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6000)
    args = ap.parse_args()
    scidl.configure_torch(args.threads)
    config = scidl.make_config(steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        run = scidl.train(config, RunStore(tmp), progress=False)
    summary = scidl.grokking_summary(run.metrics)
    if summary["grok_step"] is None:
        raise SystemExit(f"the run did not grok within steps={args.steps} (final test accuracy "
                         f"{run.summary['final_test_acc']:.3f}); pass a larger --steps")
    seconds = run.summary["train_seconds"] * summary["grok_step"] / run.summary["steps_run"]
    x, y = make_dataset(config.task).train
    model = make_model(config.model, config.task, seed=config.train.seed)
    plain = time_steps(model, lambda: cross_entropy(reference_logits(model, x), y), 20)
    print(f"p={config.task.p} threads={args.threads} steps={run.summary['steps_run']} "
          f"eval_every={config.train.eval_every} train_seconds={run.summary['train_seconds']:.1f}")
    print(f"grok_step = {summary['grok_step']}")
    print(f"time_to_grok_s = {seconds:.1f}")
    print(f"plain_time_to_grok_s = {summary['grok_step'] * plain:.1f}  # grok_step x plain step "
          f"({plain * 1e3:.1f} ms)")
    print(f"speedup = {summary['grok_step'] * plain / seconds:.2f}")


if __name__ == "__main__":
    main()
