"""The yardsticks: how scidl scores its own understanding of a phenomenon, in one place.

Q1 predict before training whether a net will learn (and when); Q2 tell from the weights alone
whether it has; Q3 find the responsible part with at most ten forward passes; Q4 explain an
input -> output behaviour mechanistically within a time budget.

- `protocol`: what every question shares: a budget counted from hand-over (passes, rows, FLOPs),
  proportions and means over many models with their intervals, the AUC.
- `q3`: the Q3 estimand (noising), its ground truth by exact patching on held-out inputs, the
  methods and baselines at an equal budget (random, structural, attribution patching, the
  exhaustive ceiling); a phenomenon plugs in with `q3_task(run)` (scidl.registry.Phenomenon).
- `predict`: Q1's predictors (censored power law, logistic, early training) and baselines, the fitting
  grid and its held-out and extrapolation draws; Q2's detectors (`detector_scores`, `early_warning`).
- `q4`: Q4 over many models: each phenomenon's explanation and claim checks, timed from the call.
- `weights_baseline`: weightwatcher's power-law alpha, a weights-only Q2 baseline.
Q4's faithfulness scale and the `Explanation` live in `scidl.explain` (`scidl.explain(run)` is the
user's entry point).
"""
