"""Independent reference implementation of the Nanda et al. (2023) progress measures.

"Progress measures for grokking via mechanistic interpretability" (ICLR 2023).
Written from scratch for cross-checking ``scidl``; it does NOT import ``scidl``.
Only torch, numpy, math, einops, json, pathlib and safetensors are used.

It has its own forward pass (``grid_forward``) of the 1-layer grokking transformer, computed in
float64 from the RAW state-dict tensors of a run's safetensors checkpoint
(``load_run_checkpoint``), so that the logits and neuron activations fed to the measures below
do not come from scidl's forward: a bug there (e.g. operands swapped) shows as a disagreement.

Sources followed (read function bodies, not copied verbatim):

* mechanistic-interpretability-grokking/progress-measures-paper, ``helpers.py``
  (commit 5bf4dad): ``cross_entropy_high_precision``, ``test_logits``,
  ``fourier_2d_basis_term``, ``get_component_cos_xpy``, ``get_component_sin_xpy``.
* same repo, ``transformers.py``: ``make_fourier_basis``, ``calculate_excluded_loss``
  (one frequency at a time, mode='train', no bias correction),
  ``calculate_trig_loss`` (restricted loss, bias_correction=True),
  ``Trainer.take_metrics.sum_sq_weights``.
* A script export of the paper's ``Grokking_Analysis.ipynb`` ("Adapted from
  .../progress-measures-paper/blob/main/Grokking_Analysis.ipynb"):
  ``calculate_excluded_loss_2D_full`` (ALL key freqs removed at once, mode='train',
  no bias correction -- this is the "Excluded Loss" curve of the main progress-measure
  figure), ``trig_loss`` (restricted loss, mode='all' by default, bias-corrected),
  ``sum_sq_weights``, Fig. 3a ``(W_E @ fourier_basis.T).norm(dim=0)`` and
  Fig. 3b ``(fourier_basis @ W_L).norm(dim=1)`` with ``W_L = W_U @ W_out``.
* Grokking_Analysis notebook, neuron clustering / key frequencies: 2-D Fourier transform of
  each neuron's (p, p) activation grid at the last position, const-const term removed,
  fraction explained by {const, cos k, sin k} x {const, cos k, sin k}, cluster if the
  dominant frequency's fraction >= 0.85, key = clusters with >= max(1, 0.02*d_mlp) neurons
  (``neuron_fraction_explained``, ``key_freqs_from_neurons``).
* The model (Nanda et al. 2023, Sec. 3 / appendix; the repo's ``transformers.py``): tokens
  ``a b =`` (token p is '='), x = W_E[tokens] + W_pos, one block of causal multi-head attention
  (scores q.k / sqrt(d_head), no attention biases in the paper) added to the residual stream,
  then an MLP (ReLU, with b_in / b_out) added to the residual stream, no LayerNorm, logits =
  x @ W_U read at the last position. ``grid_forward`` follows that definition.
* ARENA_3.0 chapter1 part52 solutions (``excl_loss``, ``trig_loss``,
  ``get_trig_sum_directions``) -- same maths, used only as a cross-check.

Conventions
-----------
* ``logits`` has shape (p*p, p); row ``a*p + b`` holds the logits for input (a, b);
  the "=" output column is assumed already removed.
* Fourier basis rows: [const, cos 1, sin 1, cos 2, sin 2, ..., cos p//2, sin p//2],
  each row L2-normalised (const = 1/sqrt(p)); p must be odd.
* The Gini coefficient code is NOT in any public release of the paper code that I could
  find. ``gini`` implements the Hurley & Rickard (2009) Gini index (equal to the usual
  sorted-rank formula), applied to the per-Fourier-component L2 norms used in the
  paper's Fig. 3a/3b. Constant component excluded by default (the Fig. 3 bar plots drop
  it via ``embed_to_cos_sin``); pass ``include_constant=True`` to keep it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import einops
import numpy as np
import torch

__all__ = [
    "grid_tokens",
    "grid_labels",
    "load_run_checkpoint",
    "grid_forward",
    "fourier_basis",
    "fourier_2d_basis_term",
    "trig_directions",
    "cross_entropy_high_precision",
    "loss_on_logits",
    "excluded_loss",
    "excluded_loss_per_freq",
    "restricted_logits",
    "restricted_loss",
    "gini",
    "gini_fourier_W_E",
    "gini_fourier_W_L",
    "sum_squared_weights",
    "neuron_fraction_explained",
    "key_freqs_from_neurons",
]


# ----------------------------------------------------------------------------- forward pass
def grid_tokens(p: int) -> torch.Tensor:
    """(p*p, 3) int64 tokens ``a b =`` for every pair, row ``a*p + b``; '=' is token p."""
    a = torch.arange(p).repeat_interleave(p)  # 0,0,...,0,1,1,...
    b = torch.arange(p).repeat(p)  # 0,1,...,p-1,0,1,...
    return torch.stack([a, b, torch.full((p * p,), p)], dim=1)


def grid_labels(p: int, op: str) -> torch.Tensor:
    """(p*p,) int64 answers (a + b) mod p ('add') or (a - b) mod p ('sub'), row ``a*p + b``."""
    t = grid_tokens(p)
    if op == "add":
        return (t[:, 0] + t[:, 1]) % p
    if op == "sub":
        return (t[:, 0] - t[:, 1]) % p
    raise ValueError(f"grid_labels knows op 'add' and 'sub', not {op!r}")


def load_run_checkpoint(run_dir, step: int | None = None) -> tuple[dict, dict]:
    """Read a run folder directly from disk: (state dict name -> tensor from
    ``checkpoints/step_<7 digits>.safetensors`` at ``step``, default the highest step; the parsed
    ``config.json``)."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    files = sorted((run_dir / "checkpoints").glob("step_*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no step_*.safetensors")
    by_step = {int(f.stem[len("step_"):]): f for f in files}
    path = by_step[max(by_step) if step is None else int(step)]
    return load_file(str(path)), json.loads((run_dir / "config.json").read_text())


_ACTS = {
    "relu": lambda x: torch.clamp(x, min=0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),  # exact (erf) GELU
    "quadratic": lambda x: x * x,
}

_BLOCK = "blocks.0."
_REQUIRED = ("W_E", "W_pos", "W_U", _BLOCK + "attn.W_Q", _BLOCK + "attn.W_K", _BLOCK + "attn.W_V",
             _BLOCK + "attn.W_O", _BLOCK + "mlp.W_in", _BLOCK + "mlp.W_out")
_OPTIONAL = ("b_U", _BLOCK + "attn.b_Q", _BLOCK + "attn.b_K", _BLOCK + "attn.b_V", _BLOCK + "attn.b_O",
             _BLOCK + "mlp.b_in", _BLOCK + "mlp.b_out")


@torch.no_grad()
def grid_forward(state: Mapping[str, torch.Tensor], act: str = "relu") -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass of the 1-layer grokking transformer from raw state-dict tensors, float64.

    ``state``: name -> tensor, as stored (W_E (p+1, d), W_pos (3, d), W_U (d, p),
    blocks.0.attn.W_Q/W_K/W_V (head, d, d_head), W_O (head, d_head, d), blocks.0.mlp.W_in
    (d, d_mlp), W_out (d_mlp, d), and the biases present: mlp b_in (d_mlp,), b_out (d,); attention
    b_Q/b_K/b_V (head, d_head), b_O (d,) and b_U (p,) are used if stored). Any other name (a
    LayerNorm, a second block) raises, so a changed architecture cannot pass unnoticed.

    Returns (logits [a, b, c] of shape (p, p, p) at the last position, neuron activations after
    the activation function at the last position [a, b, neuron], (p, p, d_mlp)).
    """
    unknown = sorted(set(state) - set(_REQUIRED) - set(_OPTIONAL))
    missing = [k for k in _REQUIRED if k not in state]
    if unknown or missing:
        raise ValueError(f"grid_forward models one attention+MLP block without LayerNorm: unknown "
                         f"tensors {unknown}, missing {missing}")
    if act not in _ACTS:
        raise ValueError(f"act {act!r} is not one of {sorted(_ACTS)}")
    W = {k: torch.as_tensor(v).detach().to(torch.float64) for k, v in state.items()}

    def get(name, shape):  # an optional bias, zeros when not stored
        return W[name] if name in W else torch.zeros(shape, dtype=torch.float64)

    W_E, W_pos, W_U = W["W_E"], W["W_pos"], W["W_U"]
    W_Q, W_K, W_V, W_O = (W[_BLOCK + "attn." + n] for n in ("W_Q", "W_K", "W_V", "W_O"))
    W_in, W_out = W[_BLOCK + "mlp.W_in"], W[_BLOCK + "mlp.W_out"]
    n_heads, d_model, d_head = W_Q.shape
    d_mlp = W_in.shape[1]
    p = W_E.shape[0] - 1  # tokens 0..p-1 and '=' = p
    if W_U.shape != (d_model, p):
        raise ValueError(f"W_U of shape {tuple(W_U.shape)}, expected ({d_model}, {p}) (no '=' output)")
    if W_pos.shape[0] < 3:
        raise ValueError("W_pos needs at least 3 positions for `a b =`")
    for name, t, shape in (("W_K", W_K, W_Q.shape), ("W_V", W_V, W_Q.shape),
                           ("W_O", W_O, (n_heads, d_head, d_model)), ("W_out", W_out, (d_mlp, d_model))):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} of shape {tuple(t.shape)}, expected {tuple(shape)}")
    b_Q, b_K, b_V = (get(_BLOCK + "attn." + n, (n_heads, d_head)) for n in ("b_Q", "b_K", "b_V"))
    b_O = get(_BLOCK + "attn.b_O", (d_model,))
    b_in, b_out = get(_BLOCK + "mlp.b_in", (d_mlp,)), get(_BLOCK + "mlp.b_out", (d_model,))
    b_U = get("b_U", (p,))

    tokens = grid_tokens(p)  # (batch, 3)
    n_pos = tokens.shape[1]
    resid = W_E[tokens] + W_pos[:n_pos][None]  # (batch, pos, d_model)

    # attention: every head reads the residual stream; query i attends to keys j <= i
    q = einops.einsum(resid, W_Q, "batch pos d, head d e -> batch head pos e") + b_Q[None, :, None, :]
    k = einops.einsum(resid, W_K, "batch pos d, head d e -> batch head pos e") + b_K[None, :, None, :]
    v = einops.einsum(resid, W_V, "batch pos d, head d e -> batch head pos e") + b_V[None, :, None, :]
    scores = einops.einsum(q, k, "batch head qpos e, batch head kpos e -> batch head qpos kpos")
    scores = scores / math.sqrt(d_head)
    future = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(diagonal=1)  # key after query
    scores = scores.masked_fill(future, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = einops.einsum(pattern, v, "batch head qpos kpos, batch head kpos e -> batch head qpos e")
    attn_out = einops.einsum(z, W_O, "batch head pos e, head e d -> batch pos d") + b_O
    resid = resid + attn_out

    # MLP on every position
    pre = resid @ W_in + b_in
    post = _ACTS[act](pre)  # (batch, pos, d_mlp)
    resid = resid + (post @ W_out + b_out)

    logits = resid @ W_U + b_U  # (batch, pos, p)
    return logits[:, -1].reshape(p, p, p), post[:, -1].reshape(p, p, d_mlp)


# ----------------------------------------------------------------------------- basis
def fourier_basis(p: int) -> torch.Tensor:
    """(p, p) float64 orthonormal real Fourier basis, one component per row.

    Row 0 = ones/sqrt(p); row 2k-1 = cos(2*pi*k*x/p)/norm; row 2k = sin(2*pi*k*x/p)/norm,
    for k = 1..p//2 (as in ``make_fourier_basis``).
    """
    if p % 2 != 1:
        raise ValueError("the paper's basis is only a basis for odd p")
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64) / math.sqrt(p)]
    for k in range(1, p // 2 + 1):
        c = torch.cos(2 * math.pi * k * x / p)
        s = torch.sin(2 * math.pi * k * x / p)
        rows.append(c / c.norm())
        rows.append(s / s.norm())
    return torch.stack(rows, dim=0)


def fourier_2d_basis_term(F: torch.Tensor, x_index: int, y_index: int) -> torch.Tensor:
    """Flattened (p*p,) outer product F[x_index] (over a) x F[y_index] (over b)."""
    return (F[x_index][:, None] * F[y_index][None, :]).flatten()


def trig_directions(F: torch.Tensor, freq: int, sign: int = 1):
    """Unit vectors in R^(p*p) for cos(w(a + sign*b)) and sin(w(a + sign*b)), w=2*pi*freq/p.

    sign=+1 (paper):  cos = (CxCy - SxSy)/sqrt2 ; sin = (SxCy + CxSy)/sqrt2
    sign=-1 (a-b):    cos = (CxCy + SxSy)/sqrt2 ; sin = (SxCy - CxSy)/sqrt2
    where C=F[2k-1], S=F[2k], first factor indexed by a, second by b.
    """
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    ci, si = 2 * freq - 1, 2 * freq
    cc = fourier_2d_basis_term(F, ci, ci)
    ss = fourier_2d_basis_term(F, si, si)
    sc = fourier_2d_basis_term(F, si, ci)
    cs = fourier_2d_basis_term(F, ci, si)
    cos_dir = (cc - sign * ss) / np.sqrt(2)
    sin_dir = (sc + sign * cs) / np.sqrt(2)
    return cos_dir, sin_dir


def _project(logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # v v^T logits, as in get_component_*_xpy(collapse_dim=False)
    return v[:, None] @ (v[None, :] @ logits)


def _trig_component(logits: torch.Tensor, F: torch.Tensor, freq: int, sign: int) -> torch.Tensor:
    cos_dir, sin_dir = trig_directions(F, freq, sign)
    return _project(logits, cos_dir) + _project(logits, sin_dir)


# ----------------------------------------------------------------------------- losses
def cross_entropy_high_precision(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE with log_softmax in float64 (notebook version of the helper)."""
    logprobs = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return -torch.gather(logprobs, dim=-1, index=labels.long()[:, None]).mean()


def loss_on_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias_correction: bool = False,
    original_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """``test_logits`` re-implemented: optional per-output bias correction, then CE on mask."""
    if bias_correction:
        # add back mean over the batch of (original - new): restores the per-c bias
        logits = einops.reduce(original_logits - logits, "batch c -> c", "mean") + logits
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        return cross_entropy_high_precision(logits[mask], labels[mask])
    return cross_entropy_high_precision(logits, labels)


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    logits = logits.to(torch.float64)
    p = logits.shape[-1]
    if logits.shape != (p * p, p):
        raise ValueError(f"expected logits of shape (p*p, p), got {tuple(logits.shape)}")
    if labels.shape != (p * p,):
        raise ValueError("labels must have shape (p*p,)")
    return logits, p


def excluded_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_train: torch.Tensor,
    key_freqs: Sequence[int],
    sign: int = 1,
) -> float:
    """Paper's excluded loss (``calculate_excluded_loss_2D_full``).

    Subtract the cos(w_k(a+b)) and sin(w_k(a+b)) components of the logits for ALL key
    frequencies at once (projections taken from the original logits), then CE on the
    TRAIN split, without bias correction.
    """
    logits, p = _check(logits, labels)
    F = fourier_basis(p)
    new_logits = logits.clone()
    for k in key_freqs:
        new_logits = new_logits - _trig_component(logits, F, int(k), sign)
    return loss_on_logits(new_logits, labels, mask=is_train).item()


def excluded_loss_per_freq(
    logits: torch.Tensor,
    labels: torch.Tensor,
    is_train: torch.Tensor,
    key_freqs: Sequence[int],
    sign: int = 1,
) -> list[float]:
    """One frequency at a time (``calculate_excluded_loss`` / ARENA ``excl_loss``): train, no bias corr."""
    logits, p = _check(logits, labels)
    F = fourier_basis(p)
    return [
        loss_on_logits(logits - _trig_component(logits, F, int(k), sign), labels, mask=is_train).item()
        for k in key_freqs
    ]


def restricted_logits(logits: torch.Tensor, key_freqs: Sequence[int], sign: int = 1) -> torch.Tensor:
    """Key-frequency cos/sin(w(a+b)) components only, plus the bias correction of ``test_logits``."""
    logits = logits.to(torch.float64)
    p = logits.shape[-1]
    F = fourier_basis(p)
    trig = torch.zeros_like(logits)
    for k in key_freqs:
        trig = trig + _trig_component(logits, F, int(k), sign)
    return einops.reduce(logits - trig, "batch c -> c", "mean") + trig


def restricted_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    key_freqs: Sequence[int],
    sign: int = 1,
    split_mask: torch.Tensor | None = None,
) -> float:
    """Paper's restricted loss (``trig_loss``): keep only key cos/sin(w(a+b)) terms, bias-corrected.

    split_mask=None -> all p*p pairs (the paper code's default mode='all', used for the
    "restricted loss" curve). Pass is_train / ~is_train for the train / test variants.
    """
    logits, p = _check(logits, labels)
    return loss_on_logits(restricted_logits(logits, key_freqs, sign), labels, mask=split_mask).item()


# ----------------------------------------------------------------------------- sparsity
def gini(x) -> float:
    """Hurley & Rickard (2009) Gini index of |x| (0 = uniform, ->1 = one-hot).

    G = 1 - 2 * sum_k (c_(k)/||c||_1) * (N - k + 1/2)/N, c sorted ascending, k=1..N
      = sum_k (2k - N - 1) c_(k) / (N * sum c).
    """
    c = torch.as_tensor(x, dtype=torch.float64).abs().flatten()
    n = c.numel()
    total = c.sum()
    if n == 0 or total == 0:
        return 0.0
    c, _ = torch.sort(c)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    return float(1.0 - 2.0 * torch.sum((c / total) * ((n - k + 0.5) / n)))


def _component_norms(mat_p_by_x: torch.Tensor, include_constant: bool) -> torch.Tensor:
    p = mat_p_by_x.shape[0]
    F = fourier_basis(p)
    norms = (F @ mat_p_by_x.to(torch.float64)).norm(dim=1)  # one L2 norm per Fourier row
    return norms if include_constant else norms[1:]


def gini_fourier_W_E(W_E: torch.Tensor, include_constant: bool = False) -> float:
    """W_E: (p, d_model), rows = tokens 0..p-1. Gini of the per-Fourier-component norms
    over d_model (Fig. 3a: ``(W_E @ fourier_basis.T).norm(dim=0)`` in (d_model, p) layout)."""
    return gini(_component_norms(W_E, include_constant))


def gini_fourier_W_L(W_out: torch.Tensor, W_U: torch.Tensor, include_constant: bool = False) -> float:
    """W_out: (d_mlp, d_model), W_U: (d_model, p). W_L = (W_out @ W_U).T : (p, d_mlp)
    (paper: ``W_L = W_U @ W_out`` in its transposed layout). Fourier transform over the
    output-token axis c, L2 norm over neurons per component (Fig. 3b ``W_Lf.norm(dim=1)``)."""
    W_L = (W_out.to(torch.float64) @ W_U.to(torch.float64)).T
    return gini(_component_norms(W_L, include_constant))


def sum_squared_weights(params) -> float:
    """Sum over ALL parameters (every named_parameters() entry: embeddings incl. the '='
    row, W_pos, attention, MLP weights and biases, unembed) of param**2."""
    if hasattr(params, "named_parameters"):
        tensors: Iterable = (t for _, t in params.named_parameters())
    elif isinstance(params, Mapping):
        tensors = params.values()
    else:
        tensors = params
    return float(sum(torch.as_tensor(t).detach().to(torch.float64).pow(2).sum().item() for t in tensors))


# ----------------------------------------------------------------------------- key frequencies
def neuron_fraction_explained(acts) -> torch.Tensor:
    """acts: (p, p, d_mlp) neuron activations at the last position, [a, b, neuron].

    Returns (d_mlp, (p-1)/2) float64: for frequency k = 1..(p-1)/2, the squared 2-D Fourier
    coefficients with row AND column in {0, 2k-1, 2k}, divided by the neuron's total squared
    coefficients, both without the const-const term.
    """
    acts = torch.as_tensor(acts).detach().to(torch.float64)
    p = acts.shape[0]
    if acts.shape[1] != p or acts.dim() != 3:
        raise ValueError(f"expected acts of shape (p, p, d_mlp), got {tuple(acts.shape)}")
    F = fourier_basis(p)
    # coeff[i, j, n] = sum_{a,b} F[i, a] F[j, b] acts[a, b, n]
    coeff = einops.einsum(F, F, acts, "i a, j b, a b n -> i j n")
    sq = coeff.pow(2)
    sq[0, 0, :] = 0.0
    total = sq.sum(dim=(0, 1))  # (d_mlp,)
    fracs = []
    for k in range(1, p // 2 + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        fracs.append(sq[idx][:, idx].sum(dim=(0, 1)))
    fracs = torch.stack(fracs, dim=1)
    # Dead (constant) ReLU neurons have total == 0; the notebook would give NaN there. We give
    # them fraction 0 everywhere, so they never join a cluster (same outcome as NaN < threshold).
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total[:, None] > 0, fracs / safe[:, None], torch.zeros_like(fracs))


def key_freqs_from_neurons(acts, threshold: float = 0.85, min_frac: float = 0.02) -> list[int]:
    """Frequencies (1-based) that are the dominant frequency, with fraction >= threshold, of at
    least max(1, min_frac * d_mlp) neurons."""
    fr = neuron_fraction_explained(acts)
    d_mlp, n_k = fr.shape
    best, arg = fr.max(dim=1)
    counts = [0] * (n_k + 1)
    for n in range(d_mlp):
        if float(best[n]) >= threshold:
            counts[int(arg[n]) + 1] += 1
    need = max(1, min_frac * d_mlp)
    return [k for k in range(1, n_k + 1) if counts[k] >= need]
