"""The real Fourier basis of Z_p and transforms of embeddings, activations and logits over (a, b).

Basis rows: constant, then cos(2πka/p), sin(2πka/p) for k = 1..(p-1)/2, each of unit norm,
so a p-vector's coefficients are `basis @ x` and frequency k owns rows 2k-1 and 2k.
"""
from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor
from scidl.errors import ScidlError, describe


# Operations whose Fourier algorithm computes cos/sin(w(a + sign·b)) (Nanda et al. 2023): the sign.
SUM_SIGN = {"add": 1, "sub": -1}


def make_fourier_basis(p: int, dtype: torch.dtype = torch.float32) -> tuple[Float[Tensor, "p p"], list[str]]:
    """Return the orthonormal real Fourier basis of Z_p (rows) and its row names."""
    from scidl.errors import scalar

    p = scalar(p)
    if isinstance(p, bool) or not isinstance(p, int) or p < 3 or p % 2 == 0:
        raise ScidlError(f"p={p!r} is not allowed: the real Fourier basis here is for odd p >= 3 (Z_p, p prime)")
    x = torch.arange(p, dtype=torch.float64)
    rows, names = [torch.ones(p, dtype=torch.float64)], ["const"]
    for k in range(1, p // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
        names += [f"cos {k}", f"sin {k}"]
    basis = torch.stack(rows)  # (p, p)
    return (basis / basis.norm(dim=1, keepdim=True)).to(dtype), names


def n_freqs(p: int) -> int:
    """Return the number of non-constant frequencies, (p - 1) / 2."""
    return p // 2


def fourier_transform(x: Tensor, dim: int = 0) -> Tensor:
    """Return the coefficients of `x` in the Fourier basis along axis `dim` (length p)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ScidlError(f"x={describe(x)} is not allowed: must be a floating-point tensor")
    basis, _ = make_fourier_basis(x.shape[dim], x.dtype)
    return torch.movedim(torch.tensordot(basis, x, dims=([1], [dim])), 0, dim)


def inverse_fourier_transform(c: Tensor, dim: int = 0) -> Tensor:
    """Return the signal whose Fourier coefficients along `dim` are `c` (the basis is orthonormal)."""
    basis, _ = make_fourier_basis(c.shape[dim], c.dtype)
    return torch.movedim(torch.tensordot(basis.T, c, dims=([1], [dim])), 0, dim)


def fourier_transform_2d(x: Float[Tensor, "p p ..."]) -> Float[Tensor, "p p ..."]:
    """Return the 2-D transform of a tensor over the (a, b) grid (its first two axes)."""
    return fourier_transform(fourier_transform(x, 0), 1)


def freq_energy(coeffs: Float[Tensor, "p ..."]) -> Float[Tensor, "k"]:
    """Return the squared norm per frequency 1..(p-1)/2 of 1-D coefficients (axis 0 is the basis)."""
    sq = coeffs.flatten(1).square().sum(1) if coeffs.dim() > 1 else coeffs.square()
    return sq[1::2] + sq[2::2]


def embedding_freq_energy(W: Float[Tensor, "p d"]) -> Float[Tensor, "k"]:
    """Return each frequency's share of the (non-constant) energy of an embedding over Z_p."""
    energy = freq_energy(fourier_transform(W.detach().float(), 0))
    if not float(energy.sum()) > 0:
        raise ScidlError("W with no non-constant energy is not allowed: frequency shares are undefined")
    return energy / energy.sum()


def find_key_freqs(share: Float[Tensor, "k"], factor: float = 4.0) -> list[int]:
    """Return the key frequencies: those whose energy share exceeds `factor` x the uniform share.

    The uniform share is 1 / ((p-1)/2); a sparse (grokked) embedding puts ~10-25 % on each of a
    handful of frequencies, a random one ~1/((p-1)/2) on every frequency.
    """
    if not isinstance(share, Tensor) or share.dim() != 1 or len(share) == 0:
        raise ScidlError(f"share={describe(share)} is not allowed: must be a non-empty 1-D tensor of energy shares")
    threshold = factor / len(share)
    return [k + 1 for k in range(len(share)) if float(share[k]) > threshold]


def check_freqs(name: str, freqs, p: int) -> list[int]:
    """Return `freqs` as a list of distinct frequencies of Z_p (integers in [1, (p-1)/2]); ScidlError
    naming `name` otherwise."""
    from scidl.errors import scalar

    items = [freqs] if isinstance(scalar(freqs), int) else freqs
    ok = not isinstance(items, (str, bytes)) and hasattr(items, "__iter__")
    out = [scalar(k) for k in items] if ok else []
    if not ok or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_freqs(p) for k in out) \
            or len(set(out)) != len(out):
        raise ScidlError(f"{name}={freqs!r} is not allowed: frequencies of Z_{p} are distinct integers "
                         f"in [1, {n_freqs(p)}]")
    return out


def freq_indices(k: int) -> list[int]:
    """Return the basis rows of frequency k: [cos k, sin k] (constant excluded)."""
    return [2 * k - 1, 2 * k]


def neuron_freq_fractions(acts: Float[Tensor, "p p n"]) -> Float[Tensor, "n k"]:
    """Return, per neuron, the fraction of its (mean-removed) variance over (a, b) explained by
    each frequency k: the 2-D terms whose row and column lie in {const, cos k, sin k}."""
    c = fourier_transform_2d(acts.detach().float()).square()  # (p, p, n)
    c[0, 0] = 0  # remove the mean
    total = c.flatten(0, 1).sum(0)  # (n,)
    out = []
    for k in range(1, n_freqs(acts.shape[0]) + 1):
        idx = [0, *freq_indices(k)]
        out.append(c[idx][:, idx].flatten(0, 1).sum(0))
    return torch.stack(out, dim=1) / total.clamp_min(1e-30)[:, None]


def cluster_neurons(fractions: Float[Tensor, "n k"], threshold: float = 0.85) -> Tensor:
    """Return each neuron's dominant frequency (1-based), or 0 where it explains < threshold."""
    best, k = fractions.max(dim=1)
    return torch.where(best >= threshold, k + 1, torch.zeros_like(k))


def project_freqs(x: Tensor, freqs: list[int], dim: int = 0, keep: bool = True,
                  keep_const: bool = True) -> Tensor:
    """Return `x` with only (keep=True) or without (keep=False) frequencies `freqs` along `dim`."""
    p = x.shape[dim]
    mask = torch.zeros(p, dtype=torch.bool)
    for k in check_freqs("freqs", freqs, p):
        mask[freq_indices(k)] = True
    if not keep:
        mask = ~mask
        mask[0] = keep_const
    else:
        mask[0] = keep_const
    c = fourier_transform(x, dim)
    shape = [1] * x.dim()
    shape[dim] = p
    return inverse_fourier_transform(c * mask.view(shape).to(c.dtype), dim)


def trig_logit_pattern(p: int, freq: int, sign: int = 1) -> Float[Tensor, "p p p"]:
    """Return cos(2π·freq·(a + sign·b − c)/p) over the (a, b, c) grid, in float64."""
    check_freqs("freq", [freq], p)
    if sign not in (1, -1):
        raise ScidlError(f"sign={sign!r} is not allowed: use 1 (a + b) or -1 (a - b)")
    a, b, c = torch.meshgrid(*(torch.arange(p, dtype=torch.float64),) * 3, indexing="ij")
    return torch.cos(2 * math.pi * freq * (a + sign * b - c) / p)


def _centre_logits(logits: Tensor) -> Tensor:
    L = logits.detach().double()
    return L - L.mean(dim=2, keepdim=True)  # logits are defined up to a per-(a, b) constant


def logit_trig_fraction(logits: Float[Tensor, "p p p"], freqs: list[int], sign: int = 1
                        ) -> tuple[float, dict[int, float]]:
    """Return the fraction of logit variance explained by cos(2πw(a + sign·b − c)/p) terms for w in
    `freqs` (sign=+1 for add, -1 for sub), and each term's coefficient (least squares)."""
    p = logits.shape[0]
    L = _centre_logits(logits)
    X = torch.stack([trig_logit_pattern(p, w, sign).flatten() for w in freqs], dim=1)  # (p^3, n_freqs)
    coef = torch.linalg.lstsq(X, L.flatten()[:, None]).solution.flatten()
    resid = L.flatten() - X @ coef
    explained = 1 - float(resid.square().sum() / L.square().sum())
    return explained, {w: float(v) for w, v in zip(freqs, coef)}


def freq_grid_norms(coeffs: Float[Tensor, "p p"]) -> Float[Tensor, "k1 k1"]:
    """Return the norm of 2-D coefficients per (frequency of a, frequency of b), 0 = constant."""
    groups = [[0]] + [freq_indices(k) for k in range(1, n_freqs(coeffs.shape[0]) + 1)]
    return torch.stack([torch.stack([coeffs[ga][:, gb].norm() for gb in groups]) for ga in groups])


def sum_directions(p: int, freqs, sign: int = 1) -> Float[Tensor, "2k p*p"]:
    """Return the unit directions cos(w(a + sign·b)) and sin(w(a + sign·b)) over the (a, b) grid
    (row a·p + b), two per frequency w, in float64.

    Built from 2-D basis terms as in Nanda et al.'s `get_component_cos_xpy` / `_sin_xpy`:
    cos(w(a±b)) = (cos wa cos wb ∓ sin wa sin wb) / √2 and sin(w(a±b)) = (sin wa cos wb ± cos wa sin wb) / √2
    (the √2 keeps them unit-norm). Distinct frequencies give orthonormal rows.
    """
    if sign not in (1, -1):
        raise ScidlError(f"sign={sign!r} is not allowed: use 1 (a + b) or -1 (a - b)")
    basis, _ = make_fourier_basis(p, torch.float64)
    rows = []
    for w in check_freqs("freqs", freqs, p):
        c, s = basis[2 * w - 1], basis[2 * w]
        rows.append((torch.outer(c, c) - sign * torch.outer(s, s)).flatten() / math.sqrt(2))
        rows.append((torch.outer(s, c) + sign * torch.outer(c, s)).flatten() / math.sqrt(2))
    return torch.stack(rows) if rows else torch.zeros(0, p * p, dtype=torch.float64)


def fourier_component_norms(W: Float[Tensor, "p d"]) -> Float[Tensor, "p-1"]:
    """Return the L2 norm (over the second axis) of each non-constant Fourier component of W along
    its first axis: the vectors whose Gini coefficient Nanda et al. track for W_E and W_L."""
    coeffs = fourier_transform(W.detach().double(), 0)  # (p, d)
    return coeffs[1:].norm(dim=1)


def trig_similarity(logits: Float[Tensor, "p p p"], freq: int, sign: int = 1) -> float:
    """Return the cosine similarity between the per-(a, b)-centred logits and cos(w(a + sign·b − c))
    over the whole (a, b, c) grid (ARENA's "development of trig components")."""
    L = _centre_logits(logits).flatten()
    t = trig_logit_pattern(logits.shape[0], freq, sign).flatten()
    return float(L @ t / (L.norm() * t.norm()).clamp_min(1e-300))
