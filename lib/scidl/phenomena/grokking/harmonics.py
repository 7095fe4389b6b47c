"""Harmonic analysis in the basis that fits the operation, for aggregate and per-neuron structure.

A `Basis` is an orthonormal set of real functions on the operand values, grouped into components
(the frequencies of a cyclic group, or the irreps of S_n), the first of them trivial (constant):
- `additive_basis(p)`: the Fourier basis of Z_p, for add and sub (Nanda et al. 2023);
- `dlog_basis(p)`: the Fourier basis of Z_p^* ≅ Z_{p-1} through the discrete logarithm, for mul and
  div (a·b = g^(log a + log b)); the value 0 lies outside the group and is left out;
- `irrep_basis(group)`: matrix entries sqrt(d/|G|)·ρ_jk(g) of S_n's irreps (Chughtai et al. 2023).
`basis_for(task)` picks the one that fits a task's operation.

Two readings, as the issue behind notebook 06 asks:
- `spectrum(W, basis)`: each component's share of the aggregate non-trivial energy of a weight
  matrix (values × width). Its key components are the fewest that hold `mass` of the energy; the
  spectrum is *sparse* only if they span at most `max_chance` of the non-trivial basis (the share an
  isotropic random matrix would give them). `Spectrum.key()` raises `NoSparseSpectrum` otherwise,
  rather than returning an empty or near-complete list that silently empties later measures.
- `neuron_concentration(W, basis)`: per neuron (column), the share of its non-trivial energy in its
  single largest component, averaged over neurons weighted by their energy. A one-hot MLP that groks
  (Gromov 2023) has ~1 here in the fitting basis while its aggregate spectrum is dense: each neuron
  uses one frequency, and the neurons spread over all of them.

Deviation from the papers: the key-component rule is a mass rule (fewest components holding 90 % of
the energy), not the "4 × the uniform share" rule of `fourier.find_key_freqs`, because irreps of
different dimension have different chance shares (S_4's 3-dimensional irreps already hold 9/23 of a
random matrix's energy, so a 4 × rule can never select them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable

import torch
from jaxtyping import Float
from torch import Tensor

from scidl.errors import ScidlError, describe, scalar
from scidl.phenomena.grokking.fourier import make_fourier_basis
from scidl.phenomena.grokking.task import is_prime


class NoSparseSpectrum(ScidlError):
    """The aggregate spectrum is not sparse: no small set of components holds most of the energy."""


@dataclass(frozen=True)
class Basis:
    """Orthonormal rows over operand values (columns outside the group are zero), in components.

    rows: (n_rows, n_values) float64; components: name -> row indices, the trivial one first.
    """

    name: str
    rows: Tensor
    components: dict[Hashable, list[int]]

    @property
    def trivial(self) -> Hashable:
        return next(iter(self.components))

    @property
    def nontrivial(self) -> list[Hashable]:
        return list(self.components)[1:]

    @property
    def n_values(self) -> int:
        return self.rows.shape[1]

    def chance(self) -> dict[Hashable, float]:
        """Return each non-trivial component's expected share of an isotropic random matrix's energy:
        its number of rows over all non-trivial rows."""
        total = sum(len(self.components[c]) for c in self.nontrivial)
        return {c: len(self.components[c]) / total for c in self.nontrivial}

    def coefficients(self, W: Tensor) -> Tensor:
        """Return the basis coefficients of W along its first axis (values), float64, W scaled to
        max |entry| = 1 (every reading here is a share, so scale-free)."""
        W = _check_matrix("W", W, self.n_values)
        return torch.tensordot(self.rows, W, dims=([1], [0]))


def cyclic_basis(n: int) -> tuple[Tensor, dict[int, list[int]]]:
    """Return the orthonormal real Fourier basis of Z_n (any n >= 2) and its components: 0 (constant),
    k = 1 .. n//2 with rows cos k, sin k (for even n, k = n/2 has only its cosine, (-1)^x)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ScidlError(f"n={n!r} is not allowed: Z_n needs an integer n >= 2")
    x = torch.arange(n, dtype=torch.float64)
    rows, comps = [torch.ones(n, dtype=torch.float64)], {0: [0]}
    for k in range(1, n // 2 + 1):
        comps[k] = [len(rows)]
        rows.append(torch.cos(2 * math.pi * k * x / n))
        if 2 * k != n:
            comps[k].append(len(rows))
            rows.append(torch.sin(2 * math.pi * k * x / n))
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True), comps


def additive_basis(p: int) -> Basis:
    """Return the Fourier basis of Z_p (add, sub): components 1 .. (p-1)/2, the frequencies."""
    rows, _ = make_fourier_basis(p, torch.float64)
    comps = {0: [0], **{k: [2 * k - 1, 2 * k] for k in range(1, p // 2 + 1)}}
    return Basis(f"additive Z_{p}", rows, comps)


def primitive_root(p: int) -> int:
    """Return the smallest generator of the multiplicative group Z_p^* (p prime)."""
    p = scalar(p)
    if isinstance(p, bool) or not isinstance(p, int) or p < 3 or not is_prime(p):
        raise ScidlError(f"p={p!r} is not allowed: must be a prime >= 3")
    factors = {q for q in range(2, p) if (p - 1) % q == 0 and is_prime(q)}
    return next(g for g in range(2, p) if all(pow(g, (p - 1) // q, p) != 1 for q in factors))


def discrete_log(p: int) -> Tensor:
    """Return log_g(x) for x = 0 .. p-1 with g = primitive_root(p); entry 0 (no logarithm) is -1."""
    g, out = primitive_root(p), torch.full((p,), -1, dtype=torch.long)
    x = 1
    for e in range(p - 1):
        out[x] = e
        x = x * g % p
    return out


def dlog_basis(p: int) -> Basis:
    """Return the Fourier basis of Z_p^* ≅ Z_{p-1} read through the discrete log (mul, div): the
    function x -> cos(2πk·log_g(x)/(p-1)) etc. on x = 1 .. p-1; the column of 0 is zero.
    Components 1 .. (p-1)/2 (the last has one row, since p-1 is even)."""
    p = scalar(p)
    log = discrete_log(p)
    cyc, comps = cyclic_basis(p - 1)
    rows = torch.zeros(p - 1, p, dtype=torch.float64)
    rows[:, 1:] = cyc[:, log[1:]]
    return Basis(f"discrete-log Z_{p - 1} (g={primitive_root(p)})", rows, comps)


def irrep_basis(group: Any) -> Basis:
    """Return the orthonormal basis sqrt(d/|G|)·ρ_jk(g) of a SymmetricGroup's irreps; components
    are the partitions ('4' is the trivial irrep of S_4, '1,1,1,1' the sign)."""
    if not hasattr(group, "irreps") or not hasattr(group, "order"):
        raise ScidlError(f"group={describe(group)} is not allowed: must be a SymmetricGroup (scidl.phenomena."
                         "grokking.groups), e.g. GroupTask(group='S4').symmetric_group")
    rows, comps = [], {}
    for name, rho in group.irreps.items():
        d = rho.shape[1]
        comps[name] = list(range(len(rows), len(rows) + d * d))
        rows += list((rho.flatten(1).T * math.sqrt(d / group.order)).unbind(0))
    return Basis(f"irreps {group.name}", torch.stack(rows), comps)


def basis_for(task: Any, which: str = "fitting") -> Basis:
    """Return the basis of `task`'s operands: which="fitting" (additive for add/sub and the non-group
    operations, discrete-log for mul/div, irreps for S_n), "additive" or "dlog"."""
    if which not in ("fitting", "additive", "dlog"):
        raise ScidlError(f"which={which!r} is not allowed: use 'fitting', 'additive' or 'dlog'")
    if getattr(task, "kind", None) not in ("grokking", "group"):
        raise ScidlError(f"task={describe(task)} is not allowed: must be a ModularTask or a GroupTask")
    if getattr(task, "kind", None) == "group":
        if which != "fitting":
            raise ScidlError(f"which={which!r} is not allowed for {task.group}: its basis is its irreps")
        return irrep_basis(task.symmetric_group)
    if which == "dlog" or (which == "fitting" and task.op in ("mul", "div")):
        return dlog_basis(task.p)
    return additive_basis(task.p)


def _check_matrix(name: str, W: Any, n_values: int) -> Tensor:
    if not isinstance(W, Tensor) or W.dim() not in (2, 3) or W.shape[0] != n_values or not W.is_floating_point():
        raise ScidlError(f"{name}={describe(W)} is not allowed: must be a float tensor (values={n_values}, width) "
                         f"or (values, neurons, parts)")
    W = W.detach()
    if not torch.isfinite(W).all():
        raise ScidlError(f"{name} with non-finite entries is not allowed: its spectrum is undefined")
    top = float(W.abs().max()) if W.numel() else 0.0
    return W.double() / top if top > 0 else W.double()  # shares are scale-free: no over/underflow


@dataclass(frozen=True)
class Spectrum:
    """Shares of a weight matrix's non-trivial energy per basis component, with their chance shares."""

    basis: str
    shares: dict[Hashable, float]
    chance: dict[Hashable, float]

    def ranked(self) -> list[Hashable]:
        """Return the components by share, largest first."""
        return sorted(self.shares, key=lambda c: -self.shares[c])

    def top_share(self, k: int = 5) -> float:
        """Return the energy share of the k largest components."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(self.shares):
            raise ScidlError(f"k={k!r} is not allowed: must be an integer in [1, {len(self.shares)}]")
        return float(sum(self.shares[c] for c in self.ranked()[:k]))

    def candidates(self, mass: float = 0.9) -> list[Hashable]:
        """Return the fewest components, largest first, whose shares sum to at least `mass`."""
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 < mass <= 1:
            raise ScidlError(f"mass={mass!r} is not allowed: must satisfy 0 < mass <= 1")
        out, total = [], 0.0
        for c in self.ranked():
            out.append(c)
            total += self.shares[c]
            if total >= mass - 1e-12:
                break
        return out

    def is_sparse(self, mass: float = 0.9, max_chance: float = 0.5) -> bool:
        """Return whether `mass` of the energy sits in components spanning <= max_chance of the
        non-trivial basis (an isotropic random matrix needs about `mass` of it)."""
        return sum(self.chance[c] for c in self.candidates(mass)) <= max_chance

    def key(self, mass: float = 0.9, max_chance: float = 0.5) -> list[Hashable]:
        """Return the key components (`candidates`) of a sparse spectrum; NoSparseSpectrum if it is not."""
        key = self.candidates(mass)
        span = sum(self.chance[c] for c in key)
        if span > max_chance:
            raise NoSparseSpectrum(
                f"no sparse aggregate spectrum in the {self.basis} basis: {mass:.0%} of the energy needs "
                f"{len(key)} of {len(self.shares)} components, spanning {span:.0%} of the basis (allowed: "
                f"<= {max_chance:.0%}); read per-neuron structure instead (neuron_concentration)")
        return key

    def key_share(self, mass: float = 0.9, max_chance: float = 0.5) -> tuple[float, float]:
        """Return the energy share the key components hold and the share they would hold by chance."""
        key = self.key(mass, max_chance)
        return float(sum(self.shares[c] for c in key)), float(sum(self.chance[c] for c in key))


def _component_energy(basis: Basis, W: Tensor) -> Tensor:
    """Return the energy per non-trivial component, shape (components, *W.shape[1:])."""
    if not isinstance(basis, Basis):
        raise ScidlError(f"basis={describe(basis)} is not allowed: must be a Basis (additive_basis, dlog_basis, "
                         "irrep_basis or basis_for)")
    c = basis.coefficients(W).square()
    return torch.stack([c[basis.components[k]].sum(0) for k in basis.nontrivial])


def spectrum(W: Float[Tensor, "values width"], basis: Basis) -> Spectrum:
    """Return the shares of W's aggregate non-trivial energy (over all columns) per component."""
    energy = _component_energy(basis, W).flatten(1).sum(1)
    total = float(energy.sum())
    if not total > 1e-24 * float(_check_matrix("W", W, basis.n_values).square().sum()):  # rounding is not energy
        raise ScidlError(f"W with no non-trivial energy in the {basis.name} basis is not allowed: shares are undefined")
    return Spectrum(basis.name, {c: float(e) / total for c, e in zip(basis.nontrivial, energy)}, basis.chance())


def neuron_shares(W: Float[Tensor, "values neurons ..."], basis: Basis) -> tuple[Tensor, Tensor]:
    """Return each neuron's share of its non-trivial energy per component (neurons, components) and
    its non-trivial energy (neurons,). A 3-D W (values, neurons, parts) sums its parts per neuron
    (the one-hot MLP's a- and b-weights)."""
    energy = _component_energy(basis, W)
    energy = energy.flatten(2).sum(2) if energy.dim() > 2 else energy  # (components, neurons)
    total = energy.sum(0)
    return (energy / total.clamp_min(1e-300)).T, total


def neuron_concentration(W: Float[Tensor, "values neurons ..."], basis: Basis) -> float:
    """Return the energy-weighted mean over neurons of the share held by each neuron's largest
    component (1: every neuron uses one component; a random matrix: well below)."""
    shares, total = neuron_shares(W, basis)
    if not float(total.sum()) > 1e-24 * float(_check_matrix("W", W, basis.n_values).square().sum()):
        raise ScidlError(f"W with no non-trivial energy in the {basis.name} basis is not allowed: "
                         "the concentration is undefined")
    return float((shares.max(1).values * total).sum() / total.sum())


def shuffled(W: Tensor, seed: int = 0) -> Tensor:
    """Return W with its value rows permuted at random: the control that keeps every neuron's norm
    and the matrix's spectrum of singular values but breaks any tie to the group structure."""
    g = torch.Generator().manual_seed(seed)
    return W[torch.randperm(W.shape[0], generator=g)]


def operand_weights(model: Any) -> Tensor:
    """Return the weights each operand value writes into the model: the transformer's W_E[:p]
    (values, d_model), or the one-hot MLP's a- and b-weights stacked (values, d_mlp, 2)."""
    p = getattr(model, "p", None)
    if not isinstance(p, int) or not (hasattr(model, "W_E") or hasattr(model, "W_in")):
        raise ScidlError(f"model={type(model).__name__} is not allowed: must be grokking's Transformer or MLP")
    if hasattr(model, "W_E"):
        return model.W_E[:p].detach()
    return torch.stack([model.W_in[:p], model.W_in[p:2 * p]], dim=-1).detach()
