"""Addition's progress measures, `measure(model, data) -> float`, run over a run's checkpoints, and
how often the circuit-based reading (Q2) agrees with the test-set benchmark."""
from __future__ import annotations

import pandas as pd

from scidl.phenomena.addition import zoom
from scidl.phenomena.addition.definition import THRESHOLD
from scidl.phenomena.addition.task import make_dataset


def carry_attention(model, data) -> float:
    """Return how much attention the best head pays to the carry column (see zoom.digit_attention)."""
    return zoom.reads_addition(model, data)["carry_attention"]


def train_acc_cascade(model, data) -> float:
    """Return whole-answer accuracy on the cascading-carry training prompts."""
    return zoom.reads_addition(model, data)["train_acc_cascade"]


MEASURES = {"carry_attention": carry_attention, "train_acc_cascade": train_acc_cascade}


def reading_vs_benchmark(runs, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Return one row per checkpoint of every run: the Q2 reading from weights and training prompts
    (`reads_addition`), and the benchmark, whole-answer test accuracy >= threshold at that step
    (`test_acc` of the run's metrics), with `agree` = reading == benchmark."""
    rows = []
    for run in runs:
        data, metrics = make_dataset(run.config.task), run.metrics.set_index("step")
        for step in run.checkpoint_steps:
            if step not in metrics.index:
                continue
            reading = zoom.reads_addition(run.load_model(step), data)
            benchmark = bool(metrics.loc[step, "test_acc"] >= threshold)
            rows.append({"hash": run.hash, "seed": run.config.train.seed, "step": step, **reading,
                         "benchmark": benchmark, "agree": reading["learned"] == benchmark})
    return pd.DataFrame(rows)
