"""A weights-only Q2 baseline: weightwatcher's power-law exponent alpha (Martin & Mahoney 2021,
"Predicting trends in the quality of state-of-the-art neural networks without access to training
or testing data"; heavy-tailed self-regularization).

For each weight matrix W, weightwatcher fits a power law p(lambda) ~ lambda^-alpha to the tail of
the eigenvalues of W^T W (the squared singular values; no rescaling) above an xmin it chooses by
the Kolmogorov-Smirnov distance. Well-trained layers have alpha in roughly 2..6 (lower: more
correlation learned); a random (Gaussian) matrix has a Marchenko-Pastur bulk and, for large
matrices, alpha > 6. For matrices as small as scidl's (31..128 eigenvalues) alpha is noisy: a
Gaussian 128x64 matrix gives alpha from about 2.3 to 20 over seeds (median 4.6); 256x128 gives
2.8 to 35 (median 5.7). Read it as a baseline, not as ground truth.

`weightwatcher_alpha(model)` copies every weight matrix of a scidl model (raw parameters such as
W_in, W_E, blocks.0.attn.W_Q) into a throwaway module of nn.Linear layers, which is what
weightwatcher reads, and returns the mean alpha over layers and each layer's fit.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from typing import Any

import torch
from torch import nn

from scidl.errors import ScidlError, check_int, describe, not_allowed

__all__ = ["weightwatcher_alpha", "weight_matrices", "MIN_EVALS"]

# weightwatcher skips a layer whose matrix has fewer than `min_evals` eigenvalues (min(N, M));
# its analyze() default is 8 (constants.DEFAULT_MIN_EVALS; its docstring says 10). We pass it
# explicitly: every matrix of scidl's models (the smallest: 64x31, 32x64, 62x128, ...) has at
# least 31 eigenvalues and is analysed; the transformer's W_pos (n_ctx=3 rows, 3 eigenvalues) is
# not, since a power-law tail cannot be fitted to 3 numbers. Below 20 eigenvalues weightwatcher
# switches to its small-N fit (which prints "SMALL N PL FIT" on stdout; we swallow it).
MIN_EVALS = 8

_WW_LOGGER = "weightwatcher"  # weightwatcher.constants.WW_NAME
_HEAD_OUT = ("W_O",)  # per-head output projections are stored (head, d_head, d_model)


def weight_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return {parameter name: 2-D float32 CPU copy} of every weight matrix of `model`.

    2-D parameters are copied as stored (scidl stores (d_in, d_out), nn.Linear (d_out, d_in); the
    eigenvalues of W^T W do not depend on which). Per-head attention parameters (3-D) become one
    d_model x (head*d_head) matrix, heads side by side: W_Q/W_K/W_V stored (head, d_model, d_head)
    -> "h d e -> d (h e)"; W_O stored (head, d_head, d_model) -> "h e d -> d (h e)" (the transpose
    of the (h e) x d matrix the heads' outputs are multiplied by). 1-D parameters (biases) and
    buffers are left out; a parameter with more than 3 dimensions is refused.
    """
    if not isinstance(model, nn.Module):
        raise ScidlError(not_allowed("model", describe(model), "a torch.nn.Module (a scidl model)"))
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.dim() < 2:
            continue
        w = p.detach()
        if w.dim() == 3:
            h, a, b = w.shape
            if name.rsplit(".", 1)[-1] in _HEAD_OUT:  # (head, d_head, d_model)
                w = w.reshape(h * a, b).T
            else:  # (head, d_model, d_head)
                w = w.permute(1, 0, 2).reshape(a, h * b)
        elif w.dim() > 3:
            raise ScidlError(not_allowed(
                f"model parameter {name}", f"tensor(shape={tuple(p.shape)})",
                "weight matrices must be 2-D, or 3-D per-head (head, d_model, d_head) / (head, d_head, d_model)"))
        w = w.to(device="cpu", dtype=torch.float32).clone()
        if not bool(torch.isfinite(w).all()):
            raise ScidlError(not_allowed(
                f"model parameter {name}", f"tensor(shape={tuple(p.shape)}) with non-finite values",
                "finite weights (a diverged run has no spectrum to fit)"))
        out[name] = w
    return out


@contextlib.contextmanager
def _quiet():
    """Swallow weightwatcher's stdout/stderr (prints, log records, tqdm) and warnings, and undo what
    importing it does to the process: `logging.basicConfig(level=INFO)` on the root logger and a
    global `warnings.simplefilter("ignore")` (weightwatcher/WW_powerlaw.py)."""
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    ww_logger = logging.getLogger(_WW_LOGGER)
    ww_level, ww_propagate, ww_disabled = ww_logger.level, ww_logger.propagate, ww_logger.disabled
    ww_logger.disabled = True  # records never reach a handler, whatever stream it holds
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        ww_logger.setLevel(ww_level)
        ww_logger.propagate, ww_logger.disabled = ww_propagate, ww_disabled


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def weightwatcher_alpha(model: nn.Module, *, min_evals: int = MIN_EVALS) -> dict:
    """Return weightwatcher's power-law alpha of `model`'s weight matrices (lower = better trained).

    Every weight matrix (see `weight_matrices`: 2-D parameters as stored, per-head attention
    flattened to d_model x (head*d_head)) is copied into an nn.Linear of a throwaway module, and
    `weightwatcher.WeightWatcher(model=...).analyze(min_evals=min_evals, plot=False, fit="PL")`
    fits each. Nothing is printed, logged or warned; the global RNGs are not touched.

    Returns {"alpha_mean": mean alpha over the fitted layers, "alpha_weighted": the mean over them
    of alpha * log10(lambda_max) (weightwatcher's summary `alpha_weighted`), "layers": how many
    were fitted, "per_layer": {parameter name: {"alpha", "alpha_weighted", "lambda_max", "xmin",
    "num_pl_spikes" (eigenvalues in the fitted tail), "shape" (the matrix analysed),
    "num_evals", "warning" (weightwatcher's: "under-trained" for alpha > 6, "over-trained" for
    alpha < 2)}}, "skipped": {parameter name: why} (fewer than `min_evals` eigenvalues, or a fit
    weightwatcher could not make)}.

    Refuses (scidl.errors.ScidlError) a `model` that is not an nn.Module, has no weight matrix, or
    has none with at least `min_evals` eigenvalues, and a weight with non-finite values.
    """
    min_evals = check_int("min_evals", min_evals, low=2)
    mats = weight_matrices(model)
    if not mats:
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        raise ScidlError(not_allowed(
            "model", f"{type(model).__name__} with parameters {shapes}",
            "a model with at least one 2-D weight matrix (or 3-D per-head attention weight)"))
    names = list(mats)
    skipped = {n: f"{min(w.shape)} eigenvalues < min_evals={min_evals}" for n, w in mats.items()
               if min(w.shape) < min_evals}
    kept = [n for n in names if n not in skipped]
    if not kept:
        raise ScidlError(not_allowed(
            "min_evals", min_evals,
            f"at most the number of eigenvalues min(shape) of some weight matrix of model: "
            f"{ {n: tuple(w.shape) for n, w in mats.items()} }"))

    holder = nn.Module()
    holder.layers = nn.ModuleList()
    with torch.random.fork_rng(devices=[]):  # nn.Linear's initialisation draws from torch's global RNG
        for n in kept:
            w = mats[n]
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight = nn.Parameter(w, requires_grad=False)  # (out, in) = w as given; same spectrum
            holder.layers.append(lin)
    by_name = {f"layers.{i}": n for i, n in enumerate(kept)}  # weightwatcher's longname -> parameter

    with _quiet(), torch.no_grad():
        import weightwatcher  # noqa: PLC0415  (heavy, and noisy on import: only here, silenced)

        watcher = weightwatcher.WeightWatcher(model=holder)
        details = watcher.analyze(min_evals=min_evals, plot=False, fit="PL", randomize=False,
                                  mp_fit=False, vectors=False)

    per_layer: dict[str, dict] = {}
    for row in details.to_dict("records"):
        n = by_name.get(str(row.get("longname")))
        if n is None:
            continue
        alpha = _finite(row.get("alpha"))
        if alpha is None or alpha <= 1.0:  # weightwatcher's "no fit" is alpha = -1
            skipped[n] = f"no power-law fit (weightwatcher alpha={row.get('alpha')!r})"
            continue
        per_layer[n] = {
            "alpha": alpha,
            "alpha_weighted": _finite(row.get("alpha_weighted")),
            "lambda_max": _finite(row.get("lambda_max")),
            "xmin": _finite(row.get("xmin")),
            "num_pl_spikes": int(row.get("num_pl_spikes", 0) or 0),
            "num_evals": int(row.get("num_evals", min(mats[n].shape)) or 0),
            "shape": tuple(mats[n].shape),
            "warning": str(row.get("warning") or ""),
        }
    for n in kept:
        if n not in per_layer and n not in skipped:
            skipped[n] = "not analysed by weightwatcher"
    per_layer = {n: per_layer[n] for n in names if n in per_layer}  # the model's parameter order
    if not per_layer:
        raise ScidlError(not_allowed(
            "model", f"{type(model).__name__} whose weight matrices weightwatcher could not fit",
            f"a model with a fittable weight matrix; skipped: {skipped}"))
    alphas = [v["alpha"] for v in per_layer.values()]
    weighted = [v["alpha_weighted"] for v in per_layer.values() if v["alpha_weighted"] is not None]
    return {
        "alpha_mean": sum(alphas) / len(alphas),
        "alpha_weighted": sum(weighted) / len(weighted) if weighted else None,
        "layers": len(per_layer),
        "per_layer": per_layer,
        "skipped": {n: skipped[n] for n in names if n in skipped},
    }
