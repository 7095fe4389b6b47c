"""scidl.yardsticks.predict: Q1 predictors and baselines on planted data, the disjointness of fitting and
scoring sets, Q2 detector scores."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import scidl
from scidl.yardsticks import predict
from scidl.errors import ScidlError


def test_fitting_and_scoring_sets_must_be_disjoint():
    base = scidl.make_config(arch="mlp", p=23, d_mlp=32, steps=10)
    fit, held = predict.q1_configs(base, [0.3, 0.5, 0.7], [0.1, 1.0], n_held_out=12)
    assert len(fit) == 6 and len(held) == 12 and not {c.hash for c in fit} & {c.hash for c in held}
    with pytest.raises(ScidlError, match="share 1 config"):
        predict.check_disjoint(fit, held + [fit[2]])
    # a held-out draw that lands on a fitting config is refused, not silently kept
    clash = [fit[0].replace(seed=100, data_seed=100)]
    with pytest.raises(ScidlError, match="never be used for fitting"):
        predict.check_disjoint(fit + clash, clash)


def test_sample_configs_draws_within_the_grid_and_derives_fields():
    base = scidl.make_config(kind="addition", n_digits=2, d_model=64, n_heads=4, d_mlp=256, steps=10)
    fit, held = predict.sample_configs(base, {"d_model": [16, 32, 96], "frac_train": [0.2, 0.5]}, 30, seed=3,
                                       multiple_of={"d_model": 4}, derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    assert [(c.model.d_model, c.task.frac_train) for c in fit] == [(d, f) for d in (16, 32, 96) for f in (0.2, 0.5)]
    assert all(c.model.d_mlp == 4 * c.model.d_model for c in fit + held)
    ds, fs = [c.model.d_model for c in held], [c.task.frac_train for c in held]
    assert all(d % 4 == 0 and 16 <= d <= 96 for d in ds) and len(set(ds)) > 5  # int field: multiples, whole range
    assert all(0.2 <= f <= 0.5 and round(f, 2) == f for f in fs)
    assert [c.train.seed for c in held] == list(range(100, 130)) and {c.train.seed for c in fit} == {0}
    again = predict.sample_configs(base, {"d_model": [16, 32, 96], "frac_train": [0.2, 0.5]}, 30, seed=3,
                                   multiple_of={"d_model": 4}, derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    assert [c.hash for c in again[1]] == [c.hash for c in held]  # fixed by the seed
    with pytest.raises(ScidlError, match=r"grid\[.frac_train.\]\[0\]=0.0 is not allowed: must be a finite number > 0"):
        predict.sample_configs(base, {"frac_train": [0.0, 0.5]}, 2, seed=0, log=("frac_train",))
    with pytest.raises(ScidlError, match=r"grid\[.frac_train.\]=\[\] is not allowed: must hold at least 1"):
        predict.sample_configs(base, {"frac_train": []}, 2, seed=0)


def _planted(n=60, seed=0):
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.2, 0.9, n)
    wd = 10 ** rng.uniform(-1, 0.5, n)
    shows = f >= 0.5
    return pd.DataFrame({"frac_train": f, "weight_decay": wd, "shows": shows,
                         "step": np.where(shows, 10 ** (2.0 - 2.0 * np.log10(f) - 1.0 * np.log10(wd)), np.nan)})


def test_q1_recovers_a_planted_rule_and_power_law():
    fit, held = _planted(seed=0), _planted(seed=1)
    m = predict.fit_q1(fit, ["frac_train", "weight_decay"], log=("frac_train", "weight_decay"), l2=1e-3)
    s = predict.score_q1(m, fit, held)
    assert s["accuracy"] >= 0.95 and s["auroc"] > 0.99
    assert s["median_abs_log10_step_error"] < 1e-9  # the power law is a line in log-log: recovered exactly
    assert s["threshold_rule"].startswith("frac_train >=") and s["threshold_accuracy"] >= 0.95
    assert s["majority_accuracy"] == pytest.approx(max(held.shows.mean(), 1 - held.shows.mean()))


def test_best_threshold_and_bad_input():
    df = pd.DataFrame({"x": [1, 2, 3, 4], "y": [0, 0, 0, 0], "shows": [False, False, True, True]})
    assert predict.best_threshold(df, ["y", "x"]) == ("x", 3.0, True)
    with pytest.raises(ScidlError, match=r"lacks the column\(s\) \['z'\]"):
        predict.fit_q1(df, ["z"])
    with pytest.raises(ScidlError, match="log scale"):
        predict.fit_q1(df, ["y"], log=("y",))


def test_early_features_read_only_the_early_curve():
    m = pd.DataFrame({"step": np.arange(0, 1001, 25), "train_loss": np.linspace(3, 0.1, 41),
                      "test_loss": np.linspace(3, 1, 41)})
    f = predict.early_features(m, frac=0.1, n_points=4)
    assert list(f) == [f"{c}@{i}" for i in range(4) for c in ("train_loss", "test_loss")]
    assert f["train_loss@3"] == pytest.approx(np.log10(m.train_loss[4]))  # step 100 = 10 % of 1000
    with pytest.raises(ScidlError, match="frac=0.01"):
        predict.early_features(m, frac=0.01)


def test_detector_scores_on_planted_checkpoints():
    rows = []
    for run, (fire, level) in enumerate([(200, 400), (300, 400), (500, 600)]):
        for step in range(0, 801, 100):
            rows.append({"hash": f"r{run}", "step": step, "stat": float(step >= fire),
                         "label": step >= level, "level_step": float(level)})
    ck = pd.DataFrame(rows)
    s = predict.detector_scores(ck, ck, "stat")
    assert s["threshold"] == 1.0 and s["n_runs"] == 3
    assert s["median_lead"] == 100.0 and s["twice_as_early"] == pytest.approx(1 / 3)
    assert s["precision"] == pytest.approx(ck.label[ck.stat >= 1].mean())
    assert 0.5 < s["auroc"] < 1
    assert predict.detector_scores(None, ck, "stat", threshold=1.0) == s
    with pytest.raises(ScidlError, match="not both"):
        predict.detector_scores(ck, ck, "stat", threshold=1.0)


def _censored(n, seed, budget=1000.0, sigma=0.05):
    """Planted: log10 t = 2 - 2 log10 f - log10 wd + N(0, sigma); a run with t > budget is censored."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.2, 0.9, n)
    wd = 10 ** rng.uniform(-1, 0.5, n)
    t = 10 ** (2.0 - 2.0 * np.log10(f) - 1.0 * np.log10(wd) + rng.normal(0, sigma, n))
    shows = t <= budget
    return pd.DataFrame({"frac_train": f, "weight_decay": wd, "shows": shows, "step": np.where(shows, t, np.nan)})


def test_censored_power_law_recovers_planted_exponents():
    frame = _censored(300, seed=0)
    assert 0.2 < frame.shows.mean() < 0.8  # both sides of the budget are present
    m = predict.fit_censored(frame, ["frac_train", "weight_decay"], budget=1000,
                             log=("frac_train", "weight_decay"))
    assert m.w[0] == pytest.approx(2.0, abs=0.03)
    assert m.exponents() == pytest.approx({"frac_train": -2.0, "weight_decay": -1.0}, abs=0.05)
    assert m.sigma == pytest.approx(0.05, abs=0.01)
    # dropping the censored runs instead (least squares on the runs that showed it) is biased: the slow
    # configs that survive are the lucky ones; the censored fit is not
    naive = np.linalg.lstsq(np.c_[np.ones(frame.shows.sum()), np.log10(frame[frame.shows][["frac_train", "weight_decay"]])],
                            np.log10(frame.step[frame.shows]), rcond=None)[0]
    assert abs(naive[1] + 2.0) > abs(m.w[1] + 2.0)
    held = _censored(200, seed=1)
    s = predict.score_q1(m, frame, held)
    assert s["accuracy"] >= 0.95 and s["auroc"] > 0.99 and s["median_abs_log10_step_error"] < 0.06
    # P(shows within the budget) is the normal CDF of the margin: 1/2 exactly on the predicted boundary
    edge = pd.DataFrame({"frac_train": [0.5], "weight_decay": [10 ** (2.0 - 2.0 * np.log10(0.5) - 3.0)]})
    edge_prob = stats_norm_cdf((3.0 - m.log_step(edge)[0]) / m.sigma)
    assert m.probability(edge)[0] == pytest.approx(edge_prob) and abs(m.probability(edge)[0] - 0.5) < 0.3


def stats_norm_cdf(z):
    from math import erf, sqrt
    return 0.5 * (1 + erf(z / sqrt(2)))


def test_censored_power_law_bad_input():
    frame = _censored(40, seed=2)
    with pytest.raises(ScidlError, match="budget=0"):
        predict.fit_censored(frame, ["frac_train"], budget=0)
    with pytest.raises(ScidlError, match="above budget=10"):
        predict.fit_censored(frame, ["frac_train"], budget=10)
    none = frame.assign(shows=False, step=np.nan)
    with pytest.raises(ScidlError, match="0 of 40 runs showed"):
        predict.fit_censored(none, ["frac_train"], budget=1000)


def test_loo_accuracy_uses_only_the_other_rows():
    frame = _censored(60, seed=3)
    fit = lambda f: predict.fit_censored(f, ["frac_train", "weight_decay"], budget=1000,
                                         log=("frac_train", "weight_decay"))
    assert predict.loo_accuracy(fit, frame) >= 0.9
    # a family that can only say the fitting majority is scored at the majority's LOO rate, which is lower
    majority = lambda f: type("M", (), {"probability": lambda self, x: np.full(len(x), float(f.shows.mean() >= 0.5))})()
    assert predict.loo_accuracy(majority, frame) < predict.loo_accuracy(fit, frame)


def test_choose_q1_picks_by_leave_one_out_and_skips_families_that_cannot_fit():
    frame = _censored(40, seed=4)
    features, log = ["frac_train", "weight_decay"], ("frac_train", "weight_decay")

    def broken(f):
        raise ScidlError("cannot fit")

    constant = lambda f: type("C", (), {"probability": lambda self, x: np.zeros(len(x))})()
    name, model, loo = predict.choose_q1(frame, {"broken": broken, "constant": constant,
                                                 "censored": lambda f: predict.fit_censored(f, features, 1000, log=log)})
    assert name == "censored" and np.isnan(loo["broken"]) and loo["censored"] > loo["constant"]
    assert isinstance(model, predict.CensoredPowerLaw) and len(model.w) == 3
    with pytest.raises(ScidlError, match="no Q1 family"):
        predict.choose_q1(frame, {"broken": broken})


def test_majority_baseline_on_a_tied_grid_is_the_better_constant():
    fit = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "shows": [False, False, True, True], "step": [np.nan, np.nan, 5, 5]})
    held = pd.DataFrame({"x": [1.0, 1.5, 2.0, 4.0], "shows": [False, False, False, True], "step": [np.nan] * 3 + [5]})
    m = predict.fit_q1(fit, ["x"])
    assert predict.score_q1(m, fit, held)["majority_accuracy"] == 0.75  # 'no' on held-out, not the tie-break 'yes'
    untied = pd.concat([fit, fit.iloc[[0]]])
    assert predict.score_q1(m, untied, held)["majority_accuracy"] == 0.75  # majority 'no' from the grid itself
    assert predict.score_q1(m, untied, held.assign(shows=~held.shows))["majority_accuracy"] == 0.25


def test_early_warning_on_planted_runs():
    def run(name, level, top, steps=range(0, 1001, 100)):
        # the statistic climbs linearly to `top` at the level step; level None: the run never generalizes
        return [{"hash": name, "step": s, "stat": top * min(s / (level or 1000), 1.0),
                 "eventually": level is not None, "level_step": float(level or math.nan)} for s in steps]

    import math
    fit = pd.DataFrame(run("g1", 400, 1.0) + run("g2", 600, 1.0) + run("n1", None, 0.3) + run("n2", None, 0.25))
    held = pd.DataFrame(run("h1", 800, 1.0) + run("h2", 500, 1.0) + run("h3", None, 0.35) + run("h4", None, 0.1))
    w = predict.early_warning(fit, held, "stat")
    # the lowest cut above both never-runs' tops flags only generalizing fitting runs
    assert 0.3 < w["threshold"] <= 1 / 3 + 1e-12
    # held out: h3 (top 0.35) is a false alarm, h4 is not flagged; h1 fires at 300 of 800, h2 at 200 of 500
    assert w["precision"] == pytest.approx(2 / 3) and w["recall"] == 1.0 and w["n_runs"] == 4
    assert w["median_fire_ratio"] == pytest.approx((300 / 800 + 200 / 500) / 2) and w["twice_as_early"] == 1.0
    assert w["n_flagged"] == 3 and w["n_generalizing"] == 2
    assert w["precision_ci_low"] == pytest.approx(scipy_stats.beta.ppf(0.025, 2, 2))  # Clopper-Pearson, 2 of 3
    assert w["median_fire_ratio_all"] == w["median_fire_ratio"] and w["twice_as_early_all"] == 1.0
    # a generalizing run the detector never flags counts as never firing over all generalizing runs
    slow = predict.early_warning(fit, pd.concat([held, pd.DataFrame(run("h5", 900, 0.3))]), "stat")
    assert slow["recall"] == pytest.approx(2 / 3) and slow["median_fire_ratio"] == w["median_fire_ratio"]
    assert slow["median_fire_ratio_all"] == pytest.approx(200 / 500) and slow["twice_as_early_all"] == pytest.approx(2 / 3)
    late = predict.early_warning(fit, pd.concat([held, pd.DataFrame(run("h5", 900, 0.3) + run("h6", 900, 0.3))]), "stat")
    assert late["median_fire_ratio_all"] == math.inf and late["twice_as_early_all"] == 0.5
    never = predict.early_warning(fit.assign(eventually=False), held, "stat")
    assert math.isnan(never["threshold"]) and math.isnan(never["precision"])


def test_censored_power_law_needs_more_observed_steps_than_weights():
    # with as many observed steps as weights the line interpolates them, sigma -> 0 and every call is certain
    frame = _censored(40, seed=5)
    seen = frame.index[frame.shows]
    three = frame.drop(seen[3:])
    assert three.shows.sum() == 3
    with pytest.raises(ScidlError, match="needs at least 4 observed steps"):
        predict.fit_censored(three, ["frac_train", "weight_decay"], 1000, log=("frac_train", "weight_decay"))
    four = frame.drop(seen[4:])
    m = predict.fit_censored(four, ["frac_train", "weight_decay"], 1000, log=("frac_train", "weight_decay"))
    assert m.sigma > 1e-3 and np.isfinite(m.w).all()
    # one feature: 3 observed steps are enough
    assert predict.fit_censored(three, ["frac_train"], 1000, log=("frac_train",)).sigma > 1e-3


def test_censored_power_law_refuses_malformed_frames():
    frame = _censored(40, seed=2)
    f = ["frac_train"]
    assert predict.fit_censored(frame, f, budget=np.int64(1000)).budget == 1000.0  # numpy ints are numbers
    for budget in (True, float("inf"), float("nan"), "1000"):
        with pytest.raises(ScidlError, match="budget="):
            predict.fit_censored(frame, f, budget=budget)
    with pytest.raises(ScidlError, match="empty"):
        predict.fit_censored(frame.iloc[:0], f, budget=1000)
    with pytest.raises(ScidlError, match=r"lacks the column\(s\) \['shows'\]"):
        predict.fit_censored(frame.drop(columns="shows"), f, budget=1000)
    with pytest.raises(ScidlError, match="must be of dtype bool"):
        predict.fit_censored(frame.assign(shows=frame.shows.astype(int)), f, budget=1000)
    with pytest.raises(ScidlError, match="log features must be among"):
        predict.fit_censored(frame, f, budget=1000, log=("weight_decay",))
    for bad in (np.nan, 0.0, -5.0):
        broken = frame.copy()
        broken.loc[broken.index[broken.shows][0], "step"] = bad
        with pytest.raises(ScidlError, match="must be positive and finite"):
            predict.fit_censored(broken, f, budget=1000)


def test_loo_accuracy_leaves_out_one_row_even_when_the_index_repeats():
    frame = pd.concat([_censored(10, seed=6)] * 2)  # every index label twice
    sizes = []

    def fit(f):
        sizes.append(len(f))
        return type("C", (), {"probability": lambda self, x: np.ones(len(x))})()

    predict.loo_accuracy(fit, frame)
    assert sizes == [19] * 20


def test_held_out_draws_never_land_on_a_grid_point():
    base = scidl.make_config(kind="addition", n_digits=2, d_model=64, n_heads=4, d_mlp=256, steps=10)
    # d_model in [16, 24], multiples of 4: 16 and 24 are grid points, so every draw must be 20
    _, held = predict.sample_configs(base, {"d_model": [16, 24]}, 6, seed=0, multiple_of={"d_model": 4},
                                     derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    assert [c.model.d_model for c in held] == [20] * 6
    with pytest.raises(ScidlError, match="all landed on grid points"):
        predict.sample_configs(base, {"d_model": [16, 24]}, 2, seed=0, multiple_of={"d_model": 8},
                               derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    with pytest.raises(ScidlError, match=r"multiple_of\['d_model'\]=32"):
        predict.sample_configs(base, {"d_model": [36, 60]}, 2, seed=0, multiple_of={"d_model": 32})
    # numpy ints are int fields (multiples), not floats rounded to 2 decimals
    _, held = predict.sample_configs(base, {"d_model": [np.int64(16), np.int64(96)]}, 10, seed=1,
                                     multiple_of={"d_model": 4}, derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    assert all(type(c.model.d_model) is int and c.model.d_model % 4 == 0 for c in held)
    # seeds aside, a held-out config equal to a grid point is refused
    fit, _ = predict.sample_configs(base, {"frac_train": [0.2, 0.5]}, 1, seed=0)
    twin = [fit[1].replace(seed=100, data_seed=100)]
    predict.check_disjoint(fit, twin)  # by hash alone the seeds tell them apart
    with pytest.raises(ScidlError, match="seeds aside"):
        predict.check_disjoint(fit, twin, ignore_seeds=True)


def test_early_warning_refuses_empty_frames_and_missing_level_steps():
    import math
    rows = lambda name, ev, lvl, top=1.0: [{"hash": name, "step": s, "stat": top * s / 1000, "eventually": ev,
                                            "level_step": lvl} for s in range(0, 1001, 250)]
    fit = pd.DataFrame(rows("a", True, 500.0) + rows("b", False, math.nan, top=0.2))
    with pytest.raises(ScidlError, match="empty"):
        predict.early_warning(fit, fit.iloc[:0], "stat")
    with pytest.raises(ScidlError, match="level_step=nan for run c"):
        predict.early_warning(fit, pd.DataFrame(rows("c", True, math.nan)), "stat")
    assert predict.early_warning(fit, fit, "stat")["recall"] == 1.0


def test_held_out_draws_keep_their_distance_and_extrapolation_leaves_the_grid():
    grid = {"frac_train": [0.3, 0.5, 0.7], "weight_decay": [0.1, 1.0]}
    assert predict.grid_distance(grid, {"frac_train": 0.5, "weight_decay": 1.0}, log=("weight_decay",)) == 0
    assert predict.grid_distance(grid, {"frac_train": 0.4, "weight_decay": 10 ** -0.5},
                                 log=("weight_decay",)) == pytest.approx(math.sqrt(0.5))
    assert predict.grid_distance(grid, {"frac_train": 0.9, "weight_decay": 1.0}) == pytest.approx(1.0)
    base = scidl.make_config(arch="mlp", p=23, d_mlp=32, steps=10)
    _, near = predict.q1_configs(base, grid["frac_train"], grid["weight_decay"], 40, seed=1)
    _, far = predict.q1_configs(base, grid["frac_train"], grid["weight_decay"], 40, seed=1, min_cells=0.35)
    distance = lambda c: predict.grid_distance(grid, {"frac_train": c.task.frac_train,
                                                      "weight_decay": c.train.weight_decay}, ("weight_decay",))
    assert min(map(distance, near)) < 0.35 <= min(map(distance, far))  # the rule bites: without it, draws sit close
    with pytest.raises(ScidlError, match="min_cells=0.5"):
        predict.q1_configs(base, grid["frac_train"], grid["weight_decay"], 2, seed=1, min_cells=0.5)
    out = predict.extrapolation_configs(base, grid, 12, seed=3, log=("weight_decay",))
    for c in out:
        f, w = c.task.frac_train, c.train.weight_decay
        assert not (0.3 <= f <= 0.7 and 0.1 <= w <= 1.0), (f, w)  # outside the grid's box
        assert 0.1 <= f <= 0.9 and 0.01 <= w <= 10.0  # within one cell (0.2; a decade) of it
    assert len({c.hash for c in out}) == 12 and not {c.hash for c in out} & {c.hash for c in far}
    add = scidl.make_config(kind="addition", n_digits=2, d_model=64, n_heads=4, d_mlp=256, steps=10)
    wide = predict.extrapolation_configs(add, {"d_model": [16, 32, 96]}, 6, seed=0, multiple_of={"d_model": 4},
                                         derive=lambda c: {"d_mlp": 4 * c["d_model"]})
    assert all(c.model.d_model % 4 == 0 and (c.model.d_model < 16 or c.model.d_model > 96) for c in wide)
    with pytest.raises(ScidlError, match="n=-1"):
        predict.extrapolation_configs(base, grid, -1, seed=0)
