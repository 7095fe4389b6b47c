"""Q1 and Q2 predictors, fitted on one set of runs and scored on a disjoint one.

Q1 (before training): will a config show the phenomenon, and by which step? `fit_q1` fits a
logistic regression on standardised config features for the yes/no, and a least-squares line of
log10(step) on the same features (log-transformed where asked: the power laws t ∝ f^-a of Nanda et
al. and t ∝ 1/wd of Omnigrok are lines in log-log) for the step. `early_features` gives the
early-training variant its inputs: the logged curves over the first `frac` of the steps.
Baselines: the majority class, and the best single-feature threshold chosen on the fitting set
(a critical data fraction, as in Varma et al. 2023).

`fit_censored` is the other Q1 model, one law for both answers: log10 t = w0 + w . x + noise
(Gaussian, sd sigma), where t is the step the phenomenon appears and x the log features. A run
that did not show it within its budget T is right-censored (t > T), not dropped: it enters the
likelihood as P(t > T), as in a Tobit regression. "Shows within the budget" is then P(t <= T) =
Phi((log10 T - mu) / sigma) >= 0.5, i.e. the predicted step mu is within the budget. With raw
(unstandardised) log features the weights are the exponents of the power law, to compare with the
literature's (t ~ f^-4.95 in Nanda et al.'s transformers, t ~ 1/wd in Omnigrok).
`loo_accuracy` scores a Q1 model family by leave-one-out on the fitting set alone, and `choose_q1`
picks the family with it, so a family is chosen without looking at the held-out configs.

Q2 (from weights): `detector_scores` turns a per-checkpoint statistic into AUROC against the
benchmark label, a threshold chosen on fitting runs, its precision on scoring runs, and its lead
(steps before the benchmark crosses its level that the detector fires). `early_warning` reads a
statistic per run instead: flagged at its first checkpoint over a threshold set for run-level
precision on the fitting runs, scored by precision, recall and fire step / benchmark step.

`sample_configs` (and `q1_configs`, its train-fraction x weight-decay case) builds the fitting grid
and seeded held-out draws off the grid, at least `min_cells` grid cells from every grid point
(`grid_distance`); `extrapolation_configs` draws configs beyond the grid's ends; `check_disjoint`
refuses fitting and scoring sets that share a config: the held-out sets are never used for fitting
or for choosing thresholds.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from scidl.errors import (ScidlError, check_bool, check_callable, check_frame, check_int, check_mapping, check_names,
                          check_number, check_numbers, check_type, scalar)
from scidl.hypotheses import proportion_ci
from scidl.yardsticks.protocol import auroc


def check_disjoint(fit: list, score: list, ignore_seeds: bool = False) -> None:
    """Raise ScidlError if any config (by hash) is in both `fit` and `score`. With `ignore_seeds`,
    configs are compared with their seeds set aside (train.seed, task.data_seed): for Q1, whose
    features are the config, a held-out run at a grid point under another seed is not unseen."""
    from scidl.config import RunConfig

    for name, configs in (("fit", fit), ("score", score)):
        if not isinstance(configs, (list, tuple)) or not all(isinstance(c, RunConfig) for c in configs):
            raise ScidlError(f"{name}={configs!r:.200} is not allowed: must be a list of RunConfigs")
    check_bool("ignore_seeds", ignore_seeds)
    key = (lambda c: c.replace(seed=0, data_seed=0).hash) if ignore_seeds else (lambda c: c.hash)
    shared = {key(c) for c in fit} & {key(c) for c in score}
    if shared:
        raise ScidlError(f"fitting and scoring sets share {len(shared)} config(s) {sorted(shared)[:3]}"
                         f"{' (seeds aside)' if ignore_seeds else ''}: held-out configs must never be used for fitting")


def _matrix(frame: pd.DataFrame, features: list[str], log: tuple[str, ...], name: str = "frame") -> np.ndarray:
    features = check_names("features", features)
    check_names("log", log, allowed=features, min_len=0)
    check_frame(name, frame, features, finite=features)
    X = frame[features].to_numpy(dtype=float).copy()
    for j, f in enumerate(features):
        if f in log:
            if not (X[:, j] > 0).all():
                raise ScidlError(f"feature {f!r} with values <= 0 is not allowed on a log scale")
            X[:, j] = np.log10(X[:, j])
    if not np.isfinite(X).all():
        raise ScidlError("features with NaN or infinite values are not allowed")
    return X


def _logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 100) -> np.ndarray:
    """Return logistic-regression weights (intercept first) by Newton's method with an L2 penalty."""
    A = np.hstack([np.ones((len(X), 1)), X])
    w = np.zeros(A.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-A @ w))
        g = A.T @ (p - y) + l2 * np.r_[0, w[1:]]
        H = A.T @ (A * (p * (1 - p))[:, None]) + l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        step = np.linalg.solve(H + 1e-9 * np.eye(len(w)), g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


@dataclass(frozen=True)
class Q1Model:
    """A fitted Q1 predictor: the features, their scaling, logistic weights and the step line."""

    features: tuple[str, ...]
    log: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    w_shows: np.ndarray
    w_step: np.ndarray | None  # log10(step) = w0 + w . x; None if fewer than 3 fitting runs showed it

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        return (_matrix(frame, list(self.features), self.log) - self.mean) / self.std

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        A = np.hstack([np.ones((len(frame), 1)), self._x(frame)])
        return 1 / (1 + np.exp(-A @ self.w_shows))

    @property
    def has_step(self) -> bool:
        return self.w_step is not None

    def step(self, frame: pd.DataFrame) -> np.ndarray:
        if self.w_step is None:
            raise ScidlError("this Q1 model has no step line: fewer than 3 fitting runs showed the phenomenon")
        A = np.hstack([np.ones((len(frame), 1)), self._x(frame)])
        return 10 ** (A @ self.w_step)


def fit_q1(frame: pd.DataFrame, features: list[str], shows: str = "shows", step: str = "step",
           log: tuple[str, ...] = (), l2: float = 1.0) -> Q1Model:
    """Fit Q1 on `frame` (one row per run): `shows` (bool) and, where it is true, `step`. `l2` is the
    ridge penalty on the standardised logistic weights (a separable fitting set would otherwise push
    them to infinity and every prediction to 0 or 1)."""
    check_frame("frame", frame, (), boolean=[shows])
    check_number("l2", l2, 0)
    X = _matrix(frame, features, log)
    _check_steps(frame, shows, step, "frame")
    y = frame[shows].to_numpy(dtype=bool)
    mean, std = X.mean(0), X.std(0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    w_shows = _logistic(Z, y.astype(float), l2=l2)
    w_step = None
    if y.sum() >= 3:
        A = np.hstack([np.ones((int(y.sum()), 1)), Z[y]])
        w_step = np.linalg.lstsq(A, np.log10(frame.loc[y, step].to_numpy(dtype=float)), rcond=None)[0]
    return Q1Model(tuple(features), tuple(log), mean, std, w_shows, w_step)


@dataclass(frozen=True)
class CensoredPowerLaw:
    """A fitted censored power law: log10 t = w[0] + w[1:] . x, x the features (log10 where asked),
    noise sd `sigma` (in dex), and the budget (steps) the fitting runs were censored at."""

    features: tuple[str, ...]
    log: tuple[str, ...]
    w: np.ndarray
    sigma: float
    budget: float
    has_step = True

    def log_step(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the predicted log10 step (the median of t) per row."""
        return self.w[0] + _matrix(frame, list(self.features), self.log) @ self.w[1:]

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Return P(t <= budget) per row: the probability of showing the phenomenon within the budget."""
        return stats.norm.cdf((math.log10(self.budget) - self.log_step(frame)) / self.sigma)

    def step(self, frame: pd.DataFrame) -> np.ndarray:
        return 10 ** self.log_step(frame)

    def exponents(self) -> dict[str, float]:
        """Return each feature's exponent in t ~ prod x^w (its weight; log features only)."""
        return {f: float(w) for f, w in zip(self.features, self.w[1:]) if f in self.log}


def _check_steps(frame: pd.DataFrame, shows: str, step: str, name: str) -> None:
    """Raise ScidlError unless `frame[step]` is a positive, finite number on every row where `shows`."""
    seen = frame[frame[shows]]
    if len(seen) == 0:
        return
    check_frame(name, frame, (step,))
    values = pd.to_numeric(seen[step], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ScidlError(f"{name}[{step!r}]={scalar(seen[step].iloc[int(np.flatnonzero(bad)[0])])!r} is not allowed on a row "
                         f"where {shows!r} is true: the step a run showed it at must be positive and finite")


def fit_censored(frame: pd.DataFrame, features: list[str], budget: float, shows: str = "shows",
                 step: str = "step", log: tuple[str, ...] = (), l2: float = 1e-3) -> CensoredPowerLaw:
    """Fit the censored power law on `frame` by maximum likelihood: runs where `shows` is true
    contribute the Gaussian density of log10 `step`, the others P(t > budget). `l2` is a small ridge
    on the non-intercept weights, so a fitting set where one side is all censored still has a finite
    fit.

    Raises ScidlError unless more runs showed the phenomenon than the law has weights (1 +
    len(features)): with as many observed steps as weights the line passes through them exactly, sigma
    goes to 0 and the likelihood has no maximum (every call would be certain)."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not (0 < budget < math.inf):
        raise ScidlError(f"budget={budget!r} is not allowed: must be a positive, finite number of steps")
    check_frame("frame", frame, (step,), boolean=[shows])
    check_number("l2", l2, 0)
    features = check_names("features", features)
    for column in (shows, step):
        if column not in frame:
            raise ScidlError(f"column {column!r} is not allowed: not a column of the frame ({sorted(frame.columns)[:12]})")
    unknown = [f for f in log if f not in features]
    if unknown:
        raise ScidlError(f"log={unknown} is not allowed: log features must be among features={features}")
    if frame[shows].dtype != bool:
        raise ScidlError(f"column {shows!r} of dtype {frame[shows].dtype} is not allowed: must be bool (did the run show it)")
    X = _matrix(frame, features, log)
    y = frame[shows].to_numpy(dtype=bool)
    need = len(features) + 2
    if y.sum() < need:
        raise ScidlError(f"a fitting set where {int(y.sum())} of {len(y)} runs showed the phenomenon is not allowed: "
                         f"the censored power law in {len(features)} feature(s) needs at least {need} observed steps")
    raw = frame.loc[y, step].to_numpy(dtype=float)
    if not (np.isfinite(raw) & (raw > 0)).all():
        raise ScidlError(f"{step!r} values {raw[~(np.isfinite(raw) & (raw > 0))][:3]} are not allowed for runs that "
                         "showed the phenomenon: must be positive and finite")
    t = np.log10(raw)
    if (t > math.log10(budget)).any():
        raise ScidlError(f"steps above budget={budget} are not allowed: a run that showed it did so within the budget")
    A = np.hstack([np.ones((len(X), 1)), X])
    cut = math.log10(budget)

    def nll(theta: np.ndarray) -> float:
        w, log_sigma = theta[:-1], theta[-1]
        sigma = math.exp(log_sigma)
        mu = A @ w
        seen = stats.norm.logpdf(t, mu[y], sigma).sum()
        censored = stats.norm.logsf(cut, mu[~y], sigma).sum()
        return -(seen + censored) + l2 * float(w[1:] @ w[1:])

    start = np.r_[np.linalg.lstsq(A[y], t, rcond=None)[0], math.log(max(float(np.std(t)), 0.05))]
    res = optimize.minimize(nll, start, method="Nelder-Mead" if len(start) <= 2 else "BFGS",
                            options={"maxiter": 5000})
    if not np.isfinite(res.fun):
        raise ScidlError(f"the censored power law did not converge on this fitting set ({res.message})")
    return CensoredPowerLaw(tuple(features), tuple(log), res.x[:-1], float(math.exp(res.x[-1])), float(budget))


def loo_accuracy(fit_fn, frame: pd.DataFrame, shows: str = "shows") -> float:
    """Return the leave-one-out accuracy of `fit_fn(frame) -> model` on `frame` alone: each row
    predicted (probability >= 0.5) by a model fitted on the others."""
    check_callable("fit_fn", fit_fn, "a function frame -> fitted model")
    check_frame("frame", frame, (), boolean=[shows], min_rows=2)
    right = []
    for i in range(len(frame)):
        model = fit_fn(frame.iloc[np.r_[0:i, i + 1:len(frame)]])  # by position: the index may repeat
        right.append(bool(model.probability(frame.iloc[[i]])[0] >= 0.5) == bool(frame[shows].iloc[i]))
    return float(np.mean(right))


def best_threshold(frame: pd.DataFrame, features: list[str], shows: str = "shows") -> tuple[str, float, bool]:
    """Return the single feature, threshold and side (True: shows when feature >= threshold) with the
    best accuracy on `frame` (ties: the first feature, the lowest threshold)."""
    features = check_names("features", features)
    check_frame("frame", frame, (), finite=features, boolean=[shows])
    y = frame[shows].to_numpy(dtype=bool)
    best = (-1.0, features[0], math.inf, True)
    for f in features:
        values = np.sort(frame[f].unique())
        cuts = np.r_[values, values[-1] + 1]
        for t in cuts:
            for above in (True, False):
                pred = frame[f].to_numpy() >= t if above else frame[f].to_numpy() < t
                acc = float((pred == y).mean())
                if acc > best[0]:
                    best = (acc, f, float(t), above)
    return best[1], best[2], best[3]


def threshold_calls(fit: pd.DataFrame, held_out: pd.DataFrame, features: list[str],
                    shows: str = "shows") -> tuple[str, np.ndarray]:
    """Return the best single-feature threshold chosen on `fit` (`best_threshold`), as a rule such as
    'weight_decay >= 1', and its call (bool) on each row of `held_out`."""
    f, t, above = best_threshold(fit, features, shows)
    check_frame("held_out", held_out, (), finite=[f])
    x = held_out[f].to_numpy()
    return f"{f} {'>=' if above else '<'} {t:g}", (x >= t if above else x < t)


def score_q1(model: Q1Model, fit: pd.DataFrame, held_out: pd.DataFrame, shows: str = "shows", step: str = "step",
             threshold_features: list[str] | None = None) -> dict:
    """Return Q1's scores on `held_out`: accuracy (p >= 0.5), AUROC (NaN if one class), the median
    |log10 error| of the step over held-out runs that showed it, and the two baselines' accuracy
    (majority class of `fit`, or the better constant on `held_out` when `fit` is tied; the best
    single-feature threshold chosen on `fit`)."""
    check_type("model", model, (Q1Model, CensoredPowerLaw), "a fitted Q1 model (fit_q1, fit_censored)")
    check_frame("fit", fit, (), boolean=[shows])
    check_frame("held_out", held_out, (), boolean=[shows])
    if threshold_features is not None:
        check_names("threshold_features", threshold_features)
    if model.has_step:
        _check_steps(held_out, shows, step, "held_out")
    y = held_out[shows].to_numpy(dtype=bool)
    prob = model.probability(held_out)
    majority = bool(fit[shows].mean() >= 0.5)
    tied = fit[shows].mean() == 0.5  # no majority: the better constant on held_out (the stronger baseline)
    majority_accuracy = float(max(y.mean(), 1 - y.mean())) if tied else float((y == majority).mean())
    rule, thr_pred = threshold_calls(fit, held_out, threshold_features or list(model.features), shows)
    out = {"n_fit": len(fit), "n_held_out": len(held_out), "accuracy": float(((prob >= 0.5) == y).mean()),
           "auroc": auroc(prob, y) if 0 < y.sum() < len(y) else math.nan,
           "majority_accuracy": majority_accuracy,
           "threshold_accuracy": float((thr_pred == y).mean()),
           "threshold_rule": rule}
    if model.has_step and y.sum():
        err = np.abs(np.log10(model.step(held_out[y])) - np.log10(held_out.loc[y, step].to_numpy(dtype=float)))
        out["median_abs_log10_step_error"] = float(np.median(err))
    else:
        out["median_abs_log10_step_error"] = math.nan
    return out


def early_features(metrics: pd.DataFrame, frac: float = 0.1, columns: tuple[str, ...] = ("train_loss", "test_loss"),
                   n_points: int = 4, total_steps: int | None = None) -> dict[str, float]:
    """Return log10 of each column at `n_points` evenly spaced evaluations within the first `frac` of
    the run's steps after step 0 (the curve an early-training predictor may read; step 0 is the
    initialisation, not training), named `<column>@<i>`."""
    columns = check_names("columns", columns)
    check_frame("metrics", metrics, (), finite=["step", *columns])
    check_number("frac", frac, 0, 1, low_open=True)
    check_int("n_points", n_points, 1)
    if total_steps is not None:
        check_int("total_steps", total_steps, 1)
    total = int(metrics.step.max()) if total_steps is None else total_steps
    early = metrics[(metrics.step > 0) & (metrics.step <= frac * total)]
    if len(early) < n_points:
        raise ScidlError(f"frac={frac} is not allowed here: the first {frac:.0%} of the run has {len(early)} "
                         f"evaluations, fewer than n_points={n_points} (evaluate more often)")
    pick = early.iloc[np.linspace(0, len(early) - 1, n_points).round().astype(int)]
    return {f"{c}@{i}": float(np.log10(max(v, 1e-12))) for i, (_, r) in enumerate(pick.iterrows())
            for c, v in ((c, r[c]) for c in columns)}


def detector_scores(fit: pd.DataFrame | None, held_out: pd.DataFrame, statistic: str, label: str = "label",
                    step: str = "step", run: str = "hash", level_step: str = "level_step",
                    threshold: float | None = None) -> dict:
    """Return a Q2 detector's scores: AUROC of `statistic` for `label` over the held-out checkpoints;
    the threshold (best accuracy on the fitting checkpoints); on held-out checkpoints its precision;
    and per held-out run that reached the level, the lead = level_step - first step the detector fires
    (NaN if it never fires), with the median lead and the share of those runs flagged at least twice as
    early (fire step <= level_step / 2). A fixed `threshold` (chosen before, elsewhere) replaces the
    fitted one; then `fit` must be None, so no scored checkpoint can choose it."""
    if (threshold is None) == (fit is None):
        raise ScidlError("give either fitting checkpoints (fit) or a fixed threshold, not both or neither")
    for name, frame in (("fit", fit), ("held_out", held_out)):
        if frame is not None:
            check_frame(name, frame, [run, level_step], finite=[statistic, step], boolean=[label])
    if threshold is not None:
        check_number("threshold", threshold)
    y = held_out[label].to_numpy(dtype=bool)
    t = threshold if threshold is not None else _best_cut(fit[statistic].to_numpy(dtype=float),
                                                          fit[label].to_numpy(dtype=bool))
    fired = held_out[statistic].to_numpy(dtype=float) >= t
    leads, twice = [], []
    for _, g in held_out.groupby(run):
        lvl = g[level_step].iloc[0]
        if pd.isna(lvl):
            continue
        on = g.loc[g[statistic] >= t, step]
        first = on.min() if len(on) else math.nan
        leads.append(lvl - first)
        twice.append(bool(first <= lvl / 2) if not math.isnan(first) else False)
    return {"auroc": auroc(held_out[statistic], y) if 0 < y.sum() < len(y) else math.nan, "threshold": t,
            "precision": float(y[fired].mean()) if fired.any() else math.nan,
            "median_lead": float(np.nanmedian(leads)) if leads and not np.isnan(leads).all() else math.nan,
            "twice_as_early": float(np.mean(twice)) if twice else math.nan, "n_runs": len(leads)}


def _best_cut(x: np.ndarray, y: np.ndarray) -> float:
    """Return the threshold t (predict y when x >= t) with the best accuracy on (x, y)."""
    cuts = np.unique(x)
    accs = [float(((x >= c) == y).mean()) for c in cuts]
    return float(cuts[int(np.argmax(accs))])


def q1_configs(base, frac_trains: list[float], weight_decays: list[float], n_held_out: int, seed: int = 8,
               held_out_seed0: int = 100, min_cells: float = 0.0) -> tuple[list, list]:
    """Return (fitting configs, held-out configs) for a Q1 sweep over train fraction x weight decay:
    `sample_configs` with weight decay on a log scale (refused unless positive)."""
    check_numbers("frac_trains", frac_trains, 0, 1, low_open=True)
    check_numbers("weight_decays", weight_decays, 0, low_open=True)  # sampled on a log scale
    return sample_configs(base, {"frac_train": frac_trains, "weight_decay": weight_decays}, n_held_out, seed,
                          held_out_seed0, log=("weight_decay",), min_cells=min_cells)


def grid_distance(grid: dict[str, list], point: dict, log: tuple[str, ...] = ()) -> float:
    """Return the distance from `point` to the nearest point of the product grid `grid`, in grid
    cells: per field, how far the value is from its nearest grid value in units of the local spacing
    (log spacing for fields in `log`; beyond the grid's ends, the end cell's spacing), combined as a
    Euclidean norm. A point on the grid is at 0; the centre of a 2-D cell at 0.71."""
    _check_grid(grid, log)
    check_mapping("point", point, f"a mapping with a value for each grid field {list(grid)}")
    for f in grid:
        if f not in point:
            raise ScidlError(f"point={point!r} is not allowed: it lacks the grid field {f!r}")
        check_number(f"point[{f!r}]", point[f], 0 if f in log else None, low_open=True)
    total = 0.0
    for f, values in grid.items():
        v = sorted({float(x) for x in values})
        x = float(point[f])
        if f in log:
            v, x = [math.log10(a) for a in v], math.log10(x)
        if len(v) == 1:
            d = 0.0 if x == v[0] else math.inf
        else:
            i = min(max(int(np.searchsorted(v, x)), 1), len(v) - 1)  # the cell [v[i-1], v[i]] (or the end one)
            gap = v[i] - v[i - 1]
            d = min(abs(x - v[i - 1]), abs(x - v[i])) / gap
        total += d * d
    return math.sqrt(total)


def extrapolation_configs(base, grid: dict[str, list], n: int, seed: int, held_out_seed0: int = 500,
                          log: tuple[str, ...] = (), multiple_of: dict[str, int] | None = None,
                          derive=None) -> list:
    """Return `n` configs outside the grid: one field (drawn) lies between a quarter of a cell and one
    cell beyond one end of its grid (drawn), on its end cell's spacing (log for fields in `log`), the
    others uniform over their grid's range as in `sample_configs`; each with its own seed from
    `held_out_seed0`. A draw the config refuses (e.g. a train fraction of 1) is drawn again."""
    from scidl.config import ConfigError

    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ScidlError(f"n={n!r} is not allowed: must be an integer >= 0")
    multiple_of, derive = _check_sampling(base, grid, log, multiple_of, derive, seed, held_out_seed0, n)
    multi = [f for f, v in grid.items() if len(set(v)) > 1]
    if n and not multi:
        raise ScidlError(f"grid={grid!r} is not allowed for extrapolation: no field has two values to step beyond")
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        for _ in range(1000):
            c = {f: _draw(rng, grid[f], f in log, multiple_of.get(f, 1), f) for f in grid}
            f = multi[int(rng.integers(len(multi)))]
            v = sorted(set(grid[f]))
            hi = bool(rng.integers(2))
            end, inner = (v[-1], v[-2]) if hi else (v[0], v[1])
            if f in log:
                step = math.log10(end) - math.log10(inner)
                x = 10 ** (math.log10(end) + step * rng.uniform(0.25, 1.0))
                x = float(f"{x:.3g}")
            else:
                x = end + (end - inner) * rng.uniform(0.25, 1.0)
            if all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in v):
                m = multiple_of.get(f, 1)
                x = int(round(x / m) * m)
            elif f not in log:
                x = round(x, 2)
            if x in set(v) or x <= 0:
                continue
            c[f] = x
            try:
                out.append(base.replace(**c, **derive(c), seed=held_out_seed0 + i, data_seed=held_out_seed0 + i))
                break
            except ConfigError:
                continue
        else:
            raise ScidlError(f"grid={grid!r} is not allowed for extrapolation: 1000 draws were refused by the config")
    return out


def sample_configs(base, grid: dict[str, list], n_held_out: int, seed: int, held_out_seed0: int = 100,
                   log: tuple[str, ...] = (), multiple_of: dict[str, int] | None = None,
                   derive=None, min_cells: float = 0.0) -> tuple[list, list]:
    """Return (fitting configs, held-out configs) for a Q1 sweep over the fields of `grid`.

    Fitting: the grid (every combination), seed 0. Held-out: `n_held_out` configs drawn with `seed`,
    each field uniform over its grid's range (log-uniform for fields in `log`; float fields rounded
    to 2 decimals, or 3 significant digits on a log scale, so they print exactly; int fields a
    multiple of `multiple_of[field]`, default 1), each with its own seed from `held_out_seed0`.
    `derive(fields) -> dict` adds dependent fields to both sets (e.g. d_mlp = 4 d_model).
    A draw that lands on a grid point, or nearer to one than `min_cells` grid cells (`grid_distance`),
    is drawn again (a grid point under another seed is not an unseen config, and one a few percent
    from it barely is); check_disjoint, seeds aside, guards the result. Raises ScidlError if the grid's
    range leaves no such config to draw."""
    if isinstance(min_cells, bool) or not isinstance(min_cells, numbers.Real) or not 0 <= min_cells < 0.5:
        raise ScidlError(f"min_cells={min_cells!r} is not allowed: must be in [0, 0.5) (inside the grid no point "
                         "is farther than half a cell from the grid along every field)")
    check_int("n_held_out", n_held_out, 0)
    multiple_of, derive = _check_sampling(base, grid, log, multiple_of, derive, seed, held_out_seed0, n_held_out)
    names = list(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    fit = [base.replace(**c, **derive(c), seed=0, data_seed=0) for c in combos]
    rng = np.random.default_rng(seed)
    on_grid = {tuple(c[f] for f in names) for c in combos}
    held = []
    for i in range(n_held_out):
        for _ in range(1000):
            c = {f: _draw(rng, grid[f], f in log, multiple_of.get(f, 1), f) for f in names}
            if tuple(c[f] for f in names) not in on_grid and grid_distance(grid, c, log) >= min_cells:
                break
        else:
            raise ScidlError(f"grid={grid!r} is not allowed for held-out draws: 1000 draws all landed on grid points "
                             f"or within min_cells={min_cells} of one")
        held.append(base.replace(**c, **derive(c), seed=held_out_seed0 + i, data_seed=held_out_seed0 + i))
    check_disjoint(fit, held, ignore_seeds=True)
    return fit, held


def _check_grid(grid: Any, log: Any) -> None:
    """Raise ScidlError unless `grid` maps field names to non-empty lists of finite numbers (positive
    for the fields in `log`, a list of grid fields)."""
    check_mapping("grid", grid, "a non-empty mapping of field -> list of values", min_len=1)
    check_names("log", log, allowed=list(grid), min_len=0)
    for f, values in grid.items():
        check_type("grid field", f, str, "a config field name")
        check_numbers(f"grid[{f!r}]", values, 0 if f in log else None, low_open=True)
        if any(isinstance(v, bool) for v in values):
            raise ScidlError(f"grid[{f!r}]={values!r} is not allowed: must be numbers, not bools")


def _check_sampling(base, grid, log, multiple_of, derive, seed, held_out_seed0, n) -> tuple[dict, Any]:
    """Check the shared inputs of sample_configs and extrapolation_configs before anything is drawn;
    return (multiple_of, derive) with their defaults, derive wrapped to check what it returns."""
    from scidl.config import SEED_MAX, ConfigError, RunConfig

    check_type("base", base, RunConfig, "a RunConfig (see scidl.make_config)")
    _check_grid(grid, log)
    check_int("seed", seed, 0, SEED_MAX)
    check_int("held_out_seed0", held_out_seed0, 0, SEED_MAX - max(int(n), 1))
    multiple_of = check_mapping("multiple_of", multiple_of or {}, "a mapping of integer grid field -> step")
    for f, m in multiple_of.items():
        if f not in grid:
            raise ScidlError(f"multiple_of key {f!r} is not allowed: not a grid field ({list(grid)})")
        check_int(f"multiple_of[{f!r}]", m, 1)
    user = check_callable("derive", derive, "a function fields -> dict of dependent fields") if derive else None

    def checked(fields: dict) -> dict:
        if user is None:
            return {}
        extra = user(fields)
        if not isinstance(extra, dict) or set(extra) & (set(fields) | {"seed", "data_seed"}):
            raise ScidlError(f"derive({fields}) returned {extra!r}, which is not allowed: must be a dict of other "
                             f"fields than the grid's and the seeds")
        return extra

    first = {f: v[0] for f, v in grid.items()}
    try:  # a field name the config does not have is named here, once, not swallowed by a redraw loop
        base.replace(**first, **checked(first))
    except ConfigError as e:
        raise ScidlError(f"grid={dict(grid)!r} is not allowed: its first point is not a valid config ({e})") from None
    return multiple_of, checked


def _draw(rng: np.random.Generator, values: list, log: bool, multiple: int, name: str = "field"):
    lo, hi = min(values), max(values)
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        lo, hi = int(lo), int(hi)
        first, last = -(-lo // multiple), hi // multiple
        if first > last:
            raise ScidlError(f"multiple_of[{name!r}]={multiple} is not allowed: no multiple lies in [{lo}, {hi}]")
        return int(multiple * rng.integers(first, last + 1))
    lo, hi = float(lo), float(hi)
    if log:
        x = float(f"{10 ** rng.uniform(math.log10(lo), math.log10(hi)):.3g}")
    else:
        x = round(float(rng.uniform(lo, hi)), 2)
    return min(max(x, lo), hi)  # rounding may step just outside the range


def choose_q1(frame: pd.DataFrame, families: dict, shows: str = "shows") -> tuple[str, object, dict[str, float]]:
    """Return (name, model fitted on all of `frame`, {name: leave-one-out accuracy}) for the family
    `families[name](frame) -> model` with the best leave-one-out accuracy on `frame` alone (ties: the
    first listed). A family that cannot be fitted on some fold (ScidlError) scores NaN and is not
    chosen; if none can, the error says so."""
    check_mapping("families", families, "a non-empty mapping of name -> function frame -> model", min_len=1)
    for name, fn in families.items():
        check_callable(f"families[{name!r}]", fn, "a function frame -> fitted model")
    check_frame("frame", frame, (), boolean=[shows], min_rows=2)
    loo = {}
    for name, fit_fn in families.items():
        try:
            loo[name] = loo_accuracy(fit_fn, frame, shows)
        except ScidlError:
            loo[name] = math.nan
    usable = [n for n in families if not math.isnan(loo[n])]
    if not usable:
        raise ScidlError(f"no Q1 family of {list(families)} can be fitted on every leave-one-out fold of this frame")
    name = max(usable, key=lambda n: loo[n])  # max keeps the first of equals
    return name, families[name](frame), loo


def early_warning(fit: pd.DataFrame, held_out: pd.DataFrame, statistic: str, eventually: str = "eventually",
                  step: str = "step", run: str = "hash", level_step: str = "level_step",
                  precision: float = 0.9) -> dict:
    """Return Q2 read as an early warning: a run is flagged at the first checkpoint where `statistic`
    >= t, and the flag claims the run will generalize (`eventually`, one bool per run).

    t is the lowest cut at which, on the fitting runs, at least `precision` of the flagged runs
    eventually generalize (run-level precision, a run flagged if its highest value reaches the cut;
    NaN if no cut reaches it). On the held-out runs: run-level precision (with `n_flagged` and its 95%
    Clopper-Pearson `precision_ci_low`) and recall, and for each flagged run that generalized, fire
    step / the step its benchmark reached the level (`level_step`): `median_fire_ratio`, and
    `twice_as_early`, the share of those runs with ratio <= 1/2 (the issue's "2x earlier"). Over *all*
    `n_generalizing` held-out runs that generalize, an unflagged one counting as never firing:
    `median_fire_ratio_all` (inf when most are not flagged) and `twice_as_early_all`. A flag can come
    no earlier than the first checkpoint after step 0, so the ratios depend on the checkpoint grid."""
    for name, frame in (("fit", fit), ("held_out", held_out)):
        check_frame(name, frame, [run, level_step], finite=[statistic, step], boolean=[eventually])
    check_number("precision", precision, 0, 1, low_open=True)
    per_run = held_out.groupby(run).agg(eventually=(eventually, "first"), level=(level_step, "first"))
    bad = per_run[per_run.eventually & ~(per_run.level > 0)]  # NaN or <= 0 compares False
    if len(bad):
        raise ScidlError(f"{level_step}={float(bad.level.iloc[0])} for run {bad.index[0]} is not allowed: a run that "
                         "eventually generalized needs the positive step its benchmark reached the level")
    per_fit = fit.groupby(run).agg(top=(statistic, "max"), eventually=(eventually, "first"))
    t = math.nan
    for cut in np.unique(fit[statistic].to_numpy(dtype=float)):
        flagged = per_fit[per_fit.top >= cut]
        if len(flagged) and flagged.eventually.mean() >= precision:
            t = float(cut)
            break
    out = {"threshold": t, "n_runs": len(per_run), "n_generalizing": int(per_run.eventually.sum()),
           "n_flagged": 0, "precision": math.nan, "precision_ci_low": math.nan, "recall": math.nan,
           "median_fire_ratio": math.nan, "twice_as_early": math.nan,
           "median_fire_ratio_all": math.nan, "twice_as_early_all": math.nan}
    if math.isnan(t):
        return out
    fire = held_out.loc[held_out[statistic] >= t].groupby(run)[step].min().reindex(per_run.index)  # NaN: never
    r = per_run.assign(flagged=fire.notna(), ratio=(fire / per_run.level).where(per_run.eventually))
    hits = r[r.flagged & r.eventually].ratio
    every = r[r.eventually].ratio.fillna(math.inf)  # an unflagged run that generalized never fired
    flagged = r[r.flagged]
    out |= {"n_flagged": len(flagged),
            "precision": float(flagged.eventually.mean()) if len(flagged) else math.nan,
            "precision_ci_low": proportion_ci(int(flagged.eventually.sum()), len(flagged))[1] if len(flagged) else math.nan,
            "recall": float(r[r.eventually].flagged.mean()) if r.eventually.any() else math.nan,
            "median_fire_ratio": float(hits.median()) if len(hits) else math.nan,
            "twice_as_early": float((hits <= 0.5).mean()) if len(hits) else math.nan,
            "median_fire_ratio_all": float(every.median()) if len(every) else math.nan,
            "twice_as_early_all": float((every <= 0.5).mean()) if len(every) else math.nan}
    return out
