"""scidl.predict: Q1 predictors and baselines on planted data, the disjointness of fitting and
scoring sets (notebook 08 builds its sets through q1_configs), Q2 detector scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scidl
from scidl import predict
from scidl.errors import ScidlError

ROOT = Path(__file__).resolve().parents[1]


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
    source = "".join("".join(c["source"]) for c in json.loads(
        (ROOT / "notebooks" / "08_automate_and_score.ipynb").read_text())["cells"])
    assert "predict.q1_configs(" in source  # notebook 08's sets are built (and checked) here


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
    with pytest.raises(ScidlError, match="features=\\['z'\\]"):
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
