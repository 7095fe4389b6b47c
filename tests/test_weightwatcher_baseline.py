"""scidl.yardsticks.weights_baseline: weightwatcher's alpha recovers planted power-law spectra, tells
a heavy-tailed matrix from a Gaussian one, reads scidl's raw and per-head parameters, refuses bad
input naming the parameter, and is silent (no stdout/stderr, no change to logging, warnings, RNG)."""
import json
import logging
import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from scidl.config import make_config
from scidl.errors import ScidlError
from scidl.registry import make_model
from scidl.yardsticks.weights_baseline import weight_matrices, weightwatcher_alpha

# Planted spectra put the eigenvalues of W^T W at the M quantiles u_i = (i + 1/2) / M of a Pareto
# law p(lambda) ~ lambda^-alpha on [1, inf): lambda_i = u_i^(-1/(alpha-1)). weightwatcher's fit then
# differs from the planted alpha only by the MLE's finite-n bias and the KS choice of xmin: for
# M = 64 we measured 2.013 / 2.52 / 3.027 / 4.04 / 5.054 for alpha = 2 / 2.5 / 3 / 4 / 5 (about
# (alpha-1)/n with n = 64). TOL = 0.15 is three times the largest error seen and far below the 1.0
# between the exponents planted side by side, so a layer fitted with another layer's spectrum (a
# name mix-up) or a wrongly flattened per-head matrix (other singular values) fails. (Random
# Pareto draws instead of quantiles would have a standard deviation of 0.16..0.8 at M = 64.)
TOL = 0.15


def _orthogonal(n, gen):
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _planted(rows, cols, alpha, seed):
    """A rows x cols matrix whose W^T W eigenvalues are the Pareto(alpha) quantiles above 1."""
    gen = torch.Generator().manual_seed(seed)
    m = min(rows, cols)
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    s = (u ** (-1.0 / (alpha - 1.0))).sqrt()
    U, V = _orthogonal(rows, gen)[:, :m], _orthogonal(cols, gen)[:, :m]
    return ((U * s) @ V.T).float()


def _gaussian(rows, cols, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, cols, generator=gen, dtype=torch.float64) / math.sqrt(rows)).float()


class Raw(nn.Module):
    """Raw parameters like scidl's models: {name: tensor}, a dotted name makes a submodule."""

    def __init__(self, params):
        super().__init__()
        for name, t in params.items():
            owner = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_parameter(leaf, nn.Parameter(t.clone()))


def test_planted_exponents_are_recovered_per_layer_and_per_head():
    h, d, e = 4, 64, 32
    q2 = _planted(d, h * e, 4.0, seed=3)  # d_model x (head*d_head)
    o2 = _planted(d, h * e, 3.0, seed=4)
    model = Raw({
        "W_in": _planted(128, 64, 2.0, seed=1),
        "W_out": _planted(64, 128, 3.0, seed=2),  # the other orientation
        "attn.W_Q": q2.reshape(d, h, e).permute(1, 0, 2).contiguous(),  # stored (head, d_model, d_head)
        "attn.W_O": o2.T.reshape(h, e, d).contiguous(),  # stored (head, d_head, d_model)
        "attn.b": torch.zeros(d),  # 1-D: left out
    })
    out = weightwatcher_alpha(model)
    planted = {"W_in": 2.0, "W_out": 3.0, "attn.W_Q": 4.0, "attn.W_O": 3.0}
    assert list(out["per_layer"]) == list(planted) and out["layers"] == 4 and out["skipped"] == {}
    for name, alpha in planted.items():
        layer = out["per_layer"][name]
        assert abs(layer["alpha"] - alpha) < TOL, (name, layer)
        assert layer["num_pl_spikes"] >= 32, (name, layer)  # the whole planted spectrum is a power law
        assert layer["lambda_max"] == pytest.approx(128.0 ** (1 / (alpha - 1)), rel=1e-3)  # u_0 = 1/128
    assert out["per_layer"]["attn.W_Q"]["shape"] == (d, h * e) == out["per_layer"]["attn.W_O"]["shape"]
    assert out["alpha_mean"] == pytest.approx(sum(v["alpha"] for v in out["per_layer"].values()) / 4)
    assert abs(out["alpha_mean"] - 3.0) < TOL
    weighted = [v["alpha"] * math.log10(v["lambda_max"]) for v in out["per_layer"].values()]
    assert out["alpha_weighted"] == pytest.approx(sum(weighted) / 4, rel=1e-6)


def test_heavy_tailed_beats_gaussian():
    # A Gaussian 256x128 matrix has a Marchenko-Pastur bulk: largest eigenvalue near the edge
    # (1 + sqrt(128/256))^2 = 2.914 (2.68..3.04 over 200 seeds) and a steep fitted tail: alpha
    # 2.84..35 over 200 seeds (median 5.7). The planted heavy tail (alpha = 2) fits to 2.0 +- TOL.
    heavy = Raw({"W_a": _planted(256, 128, 2.0, seed=5), "W_b": _planted(256, 128, 2.5, seed=6)})
    gauss = Raw({"W_a": _gaussian(256, 128, seed=7), "W_b": _gaussian(256, 128, seed=8)})
    h, g = weightwatcher_alpha(heavy), weightwatcher_alpha(gauss)
    for name in ("W_a", "W_b"):
        assert 2.6 < g["per_layer"][name]["lambda_max"] < 3.2
        assert g["per_layer"][name]["alpha"] > 2.5
        assert h["per_layer"][name]["alpha"] < 2.5 + TOL
        assert g["per_layer"][name]["alpha"] > h["per_layer"][name]["alpha"]
    assert h["alpha_mean"] < 2.25 + TOL < g["alpha_mean"]


@pytest.mark.parametrize("flat, layers, skipped", [
    (dict(arch="mlp", act="quadratic", d_mlp=128, p=31), ["W_in", "W_out"], []),
    (dict(p=31, d_model=64, n_heads=4, d_mlp=256),
     ["W_E", "W_U"] + [f"blocks.0.attn.W_{x}" for x in "QKVO"] + ["blocks.0.mlp.W_in", "blocks.0.mlp.W_out"],
     ["W_pos"]),
])
def test_scidl_models_are_analysed_silently(flat, layers, skipped, capfd):
    cfg = make_config(**flat)
    model = make_model(cfg.model, cfg.task)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    capfd.readouterr()
    out = weightwatcher_alpha(model)
    assert capfd.readouterr() == ("", "")
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert list(out["per_layer"]) == layers and out["layers"] == len(layers)
    assert list(out["skipped"]) == skipped
    assert all(v["alpha"] > 1 and math.isfinite(v["alpha"]) for v in out["per_layer"].values())
    assert min(min(v["shape"]) for v in out["per_layer"].values()) == 31  # the smallest: 31 eigenvalues
    if "W_pos" in skipped:
        assert out["per_layer"]["blocks.0.attn.W_Q"]["shape"] == (64, 64)


def test_import_and_call_leave_no_output_and_no_global_change():
    # In a fresh process weightwatcher is imported for the first time: its import logs two warnings,
    # calls logging.basicConfig(level=INFO) and warnings.simplefilter("ignore"); all must be undone.
    # A handler a user put on its logger holds the real stderr, out of reach of a redirect.
    code = """
import json, logging, sys, warnings
import torch
from torch import nn
from scidl.yardsticks.weights_baseline import weightwatcher_alpha
logging.getLogger("weightwatcher").addHandler(logging.StreamHandler(sys.stderr))
filters, root = list(warnings.filters), (list(logging.getLogger().handlers), logging.getLogger().level)
m = nn.Module(); m.W = nn.Parameter(torch.randn(40, 12))  # 12 < 20 eigenvalues: weightwatcher's printing small-N fit
out = weightwatcher_alpha(m)
sys.stdout.write(json.dumps([out["layers"], list(warnings.filters) == filters,
                             (list(logging.getLogger().handlers), logging.getLogger().level) == root,
                             "weightwatcher" in sys.modules]))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert json.loads(run.stdout) == [1, True, True, True]


def test_bad_input_is_refused_naming_the_parameter():
    with pytest.raises(ScidlError, match=r"^model=.*at least one 2-D weight matrix"):
        weightwatcher_alpha(Raw({"b_in": torch.zeros(8), "b_out": torch.zeros(3)}))
    with pytest.raises(ScidlError, match=r"^model=.*nn\.Module"):
        weightwatcher_alpha(torch.randn(64, 32))
    bad = _gaussian(64, 32, seed=0)
    bad[3, 5] = float("nan")
    with pytest.raises(ScidlError, match=r"^model parameter blocks\.W_in=.*non-finite"):
        weightwatcher_alpha(Raw({"W_ok": _gaussian(64, 32, seed=1), "blocks.W_in": bad}))
    with pytest.raises(ScidlError, match=r"^model parameter conv=.*2-D, or 3-D"):
        weightwatcher_alpha(Raw({"conv": torch.randn(2, 3, 4, 5)}))
    with pytest.raises(ScidlError, match=r"^min_evals=1000 .*min\(shape\)"):
        weightwatcher_alpha(Raw({"W": _gaussian(64, 32, seed=2)}), min_evals=1000)
    for value in (0, True, 2.5):
        with pytest.raises(ScidlError, match=r"^min_evals="):
            weightwatcher_alpha(Raw({"W": _gaussian(64, 32, seed=2)}), min_evals=value)


def test_weight_matrices_flattens_heads_side_by_side():
    h, d, e = 2, 3, 4
    q = torch.arange(h * d * e, dtype=torch.float32).reshape(h, d, e)
    o = torch.arange(h * e * d, dtype=torch.float32).reshape(h, e, d)
    mats = weight_matrices(Raw({"attn.W_Q": q, "attn.W_O": o}))
    assert torch.equal(mats["attn.W_Q"], torch.cat([q[i] for i in range(h)], dim=1))  # d x (h e)
    assert torch.equal(mats["attn.W_O"], torch.cat([o[i] for i in range(h)], dim=0).T)  # d x (h e)
