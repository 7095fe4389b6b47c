"""One run's universality reading and the table over runs (notebook 06).

`read_run(run)` reads a stored run of a modular or S_n task: did it grok and when, its aggregate
spectrum in the basis that fits its operation (`harmonics.basis_for`) and in the other cyclic basis,
its per-neuron concentration with the value-shuffled control, and for modular addition the clock /
pizza statistics (`algorithms`). `universality_table(frame)` groups the readings by (operation,
architecture) with 95 % Clopper-Pearson intervals on the grok fraction.

"Grokked" here means test accuracy >= 0.99 within the budget (generalization, not necessarily
delayed: grokking's own `is_grokking` asks for a 5x delay after memorization).
"""
from __future__ import annotations

import math

import pandas as pd

from scidl.hypotheses import proportion_ci
from scidl.phenomena.grokking import algorithms, harmonics
from scidl.phenomena.grokking.definition import grokking_summary

MASS = 0.9  # key components: the fewest holding this share of the energy (harmonics.Spectrum.key)
TOP = 5  # the "top-k share" of the check


def _other(task) -> str | None:
    if task.kind == "group":
        return None
    return "additive" if task.op in ("mul", "div") else "dlog"


def read_run(run, shuffle_seed: int = 0, n_triples: int = 1000) -> dict:
    """Return one run's reading (see the module docstring); every number is computed here."""
    cfg, model = run.config, run.load_model()
    task = cfg.task
    summary = grokking_summary(run.metrics)
    W = harmonics.operand_weights(model)
    fitting = harmonics.basis_for(task)
    spec = harmonics.spectrum(W, fitting)
    k, key = min(TOP, len(spec.shares)), spec.candidates(MASS)
    row = {
        "op": task.op, "arch": cfg.model.arch,
        "width": cfg.model.d_mlp if cfg.model.arch == "mlp" else cfg.model.d_model,
        "seed": cfg.train.seed, "hash": run.hash,
        "grokked": summary["grok_step"] is not None, "grok_step": summary["grok_step"],
        "final_test_acc": float(run.metrics.test_acc.iloc[-1]),
        "basis": fitting.name, "top_share": spec.top_share(k),
        "sparse": spec.is_sparse(MASS), "key": key, "n_key": len(key),
        "key_share": sum(spec.shares[c] for c in key), "key_chance": sum(spec.chance[c] for c in key),
        "top5": spec.ranked()[:k],
        "concentration": harmonics.neuron_concentration(W, fitting),
        "concentration_shuffled": harmonics.neuron_concentration(harmonics.shuffled(W, shuffle_seed), fitting),
    }
    other = _other(task)
    if other is not None:
        basis = harmonics.basis_for(task, other)
        row["top_share_other"] = harmonics.spectrum(W, basis).top_share(k)
        row["concentration_other"] = harmonics.neuron_concentration(W, basis)
    if task.kind == "grokking" and task.op == "add":
        read = algorithms.reading(model, task)
        row["distance_irrelevance"] = read["distance_irrelevance"]
        s = algorithms.gradient_symmetricity(model, task, n_triples) if cfg.model.arch == "transformer" else None
        row["gradient_symmetricity"] = math.nan if s is None else s  # the MLP's is 1 by construction
        row["algorithm"] = algorithms.label(read["distance_irrelevance"], read["accuracy"], s)
    return row


def universality_table(readings: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (op, arch): runs, grok fraction with its 95 % Clopper-Pearson interval, median grok step
    (of the runs that grokked), median number of key components, their energy share and chance share
    (medians), per-neuron concentration (mean), and the algorithm labels counted."""
    rows = []
    for (op, arch), g in readings.groupby(["op", "arch"], sort=False):
        n, k = len(g), int(g.grokked.sum())
        frac, low, high = proportion_ci(k, n)
        algo = g["algorithm"].value_counts().to_dict() if "algorithm" in g and g["algorithm"].notna().any() else {}
        rows.append({
            "op": op, "arch": arch, "runs": n, "grok_frac": frac, "ci_low": low, "ci_high": high,
            "median_grok_step": float(g.grok_step.dropna().median()) if k else math.nan,
            "n_key": float(g.n_key.median()), "key_share": float(g.key_share.median()),
            "key_chance": float(g.key_chance.median()), "sparse_frac": float(g["sparse"].mean()),
            "concentration": float(g.concentration.mean()),
            "algorithm": ", ".join(f"{v} {a}" for a, v in sorted(algo.items())) or "-",
        })
    return pd.DataFrame(rows)
