"""Grokking on a non-abelian group: composition in the symmetric group S_n (Chughtai et al. 2023,
"A toy model of universality"), with S_n's irreducible representations built explicitly.

Elements are the permutations of range(n) in lexicographic order (index 0 is the identity); an
element g is the tuple (g(0), ..., g(n-1)) and the product is composition, (a∘b)(i) = a(b(i)). The
task reads `a b =` and answers the index of a∘b, like grokking's modular task, so the same models,
loss and operational definition serve it (kind "group", registered by this folder's __init__).

The irreps are Young's orthogonal form: for a partition λ of n, the basis is the standard Young
tableaux of shape λ, and the adjacent transposition s_i = (i i+1) acts by
    ρ(s_i) e_T = (1/r) e_T + sqrt(1 - 1/r²) e_{s_i T},
where r = c_T(i+1) - c_T(i) is the axial distance (content col - row) and the second term is
dropped when s_i T is not standard. Every other element's matrix is a product along a word in the
s_i. The matrices are real orthogonal, so sqrt(d_λ/|G|)·ρ_jk(g) over all λ, j, k is an orthonormal
basis of functions on the group (Schur orthogonality); tests/test_universality.py checks the group
law, orthogonality and the character table.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scidl.config import ModelConfig, TrainConfig, check_field_choice, check_field_int, check_field_seed, check_memory, fail, normalize
from scidl.errors import ScidlError
from scidl.phenomena.grokking.task import Dataset, full_batch_bytes, train_mask

GROUPS = {"S3": 3, "S4": 4, "S5": 5}  # name -> n; S6 would mean 518,400 pairs


def partitions(n: int) -> list[tuple[int, ...]]:
    """Return the partitions of n, largest first: (n), (n-1, 1), ..., (1, ..., 1)."""
    def parts(m: int, most: int):
        if m == 0:
            yield ()
            return
        for first in range(min(m, most), 0, -1):
            for rest in parts(m - first, first):
                yield (first, *rest)
    return list(parts(n, n))


def standard_tableaux(shape: tuple[int, ...]) -> list[tuple[tuple[int, int], ...]]:
    """Return the standard Young tableaux of `shape`, each as the (row, col) cell of 0, 1, ..., n-1."""
    n = sum(shape)
    out = []

    def grow(cells: tuple[tuple[int, int], ...], rows: list[int]) -> None:
        if len(cells) == n:
            out.append(cells)
            return
        for r, length in enumerate(rows):
            # the next number goes at the end of row r if that cell exists and the row above is longer
            if length < shape[r] and (r == 0 or rows[r - 1] > length):
                rows[r] += 1
                grow(cells + ((r, length),), rows)
                rows[r] -= 1

    grow((), [0] * len(shape))
    return out


def _adjacent_matrix(tableaux: list, i: int) -> Tensor:
    """Return ρ(s_i), s_i = (i i+1), in Young's orthogonal form on `tableaux`."""
    index = {t: j for j, t in enumerate(tableaux)}
    m = torch.zeros(len(tableaux), len(tableaux), dtype=torch.float64)
    for j, t in enumerate(tableaux):
        (r0, c0), (r1, c1) = t[i], t[i + 1]
        axial = (c1 - r1) - (c0 - r0)
        m[j, j] = 1.0 / axial
        swapped = list(t)
        swapped[i], swapped[i + 1] = t[i + 1], t[i]
        k = index.get(tuple(swapped))  # standard iff i and i+1 are in different rows and columns
        if k is not None:
            m[k, j] = math.sqrt(1.0 - 1.0 / axial**2)
    return m


@dataclass(frozen=True)
class SymmetricGroup:
    """S_n: its elements, multiplication table and irreducible representations (Young's orthogonal form)."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 2 <= self.n <= 5:
            raise ScidlError(f"n={self.n!r} is not allowed: S_n is built for integers 2 <= n <= 5")

    @property
    def name(self) -> str:
        return f"S{self.n}"

    @property
    def elements(self) -> list[tuple[int, ...]]:
        """Return the permutations of range(n), lexicographic (index 0 is the identity)."""
        return _elements(self.n)

    @property
    def order(self) -> int:
        return math.factorial(self.n)

    def index(self, g: tuple[int, ...]) -> int:
        return _positions(self.n)[tuple(g)]

    @property
    def table(self) -> Int[Tensor, "g g"]:
        """Return the multiplication table: table[a, b] is the index of a∘b."""
        return _table(self.n)

    def inverse(self) -> Int[Tensor, "g"]:
        """Return the index of each element's inverse."""
        eye = torch.nonzero(self.table == 0)  # (a, b) with a∘b = identity
        return eye[eye[:, 0].argsort(), 1]

    def sign(self) -> Int[Tensor, "g"]:
        """Return each element's sign (+1 even, -1 odd), by counting inversions."""
        return torch.tensor([(-1) ** sum(g[i] > g[j] for i in range(self.n) for j in range(i + 1, self.n))
                             for g in self.elements])

    @property
    def irreps(self) -> dict[str, Float[Tensor, "g d d"]]:
        """Return every irrep as {partition name: ρ(g) for all g, shape (|G|, d, d)}, float64."""
        return _irreps(self.n)

    def characters(self) -> dict[str, Float[Tensor, "g"]]:
        """Return each irrep's character χ(g) = trace ρ(g)."""
        return {k: rho.diagonal(dim1=1, dim2=2).sum(-1) for k, rho in self.irreps.items()}


def partition_name(shape: tuple[int, ...]) -> str:
    """Return a partition's name, e.g. (3, 1) -> '3,1'."""
    return ",".join(map(str, shape))


@lru_cache(maxsize=None)
def _elements(n: int) -> list[tuple[int, ...]]:
    return list(itertools.permutations(range(n)))


@lru_cache(maxsize=None)
def _positions(n: int) -> dict[tuple[int, ...], int]:
    return {g: i for i, g in enumerate(_elements(n))}


@lru_cache(maxsize=None)
def _table(n: int) -> Tensor:
    els, pos = _elements(n), _positions(n)
    return torch.tensor([[pos[tuple(a[b[i]] for i in range(n))] for b in els] for a in els])


@lru_cache(maxsize=None)
def _irreps(n: int) -> dict[str, Tensor]:
    """Build ρ(g) for every g by breadth-first search from the identity: s_i∘h swaps the values i and
    i+1 of h, and ρ(s_i∘h) = ρ(s_i) ρ(h)."""
    els, pos = _elements(n), _positions(n)
    out = {}
    for shape in partitions(n):
        tableaux = standard_tableaux(shape)
        gens = [_adjacent_matrix(tableaux, i) for i in range(n - 1)]
        rho: list[Tensor | None] = [None] * len(els)
        rho[0] = torch.eye(len(tableaux), dtype=torch.float64)
        frontier = [0]
        while frontier:
            nxt = []
            for h in frontier:
                for i, s in enumerate(gens):
                    g = pos[tuple(i + 1 if v == i else i if v == i + 1 else v for v in els[h])]
                    if rho[g] is None:
                        rho[g] = s @ rho[h]
                        nxt.append(g)
            frontier = nxt
        out[partition_name(shape)] = torch.stack(rho)
    return out


@dataclass(frozen=True)
class GroupTask:
    """Composition a∘b in the symmetric group S_n, split into train/test by data_seed (Chughtai et al.
    2023). `p` is the group's order, the name grokking's models read as their number of answers."""

    kind: ClassVar[str] = "group"

    group: str = "S4"
    frac_train: float = 0.4
    data_seed: int = 0

    def __post_init__(self) -> None:
        normalize(self)
        check_field_choice("GroupTask", "group", self.group, GROUPS)
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, (int, float)) \
                or not 0 < self.frac_train < 1:
            fail("GroupTask", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        n = self.p**2
        if not 1 <= self.n_train <= n - 1:
            fail("GroupTask", "frac_train", self.frac_train,
                 f"it leaves {self.n_train} of {n} pairs for training; both splits must be non-empty")
        check_field_seed("GroupTask", "data_seed", self.data_seed)

    @property
    def symmetric_group(self) -> SymmetricGroup:
        return SymmetricGroup(GROUPS[self.group])

    @property
    def p(self) -> int:
        """Return the group's order: the number of operand values and of answers."""
        return math.factorial(GROUPS[self.group])

    @property
    def op(self) -> str:
        return self.group

    @property
    def n_train(self) -> int:
        return round(self.frac_train * self.p**2)

    @property
    def n_classes(self) -> int:
        return self.p

    def check_run(self, model: ModelConfig, train: TrainConfig) -> None:
        """Refuse a run whose full-batch training would not fit in memory (full_batch_bytes)."""
        check_memory("RunConfig", "task.group", self.group, full_batch_bytes(self.p**2, self.p, model),
                     f"full-batch training of {model.arch} (d_model={model.d_model}, d_mlp={model.d_mlp})")


@dataclass(frozen=True)
class GroupDataset(Dataset):
    """All (a, b) pairs of a group task as tokens `a b =` ('=' is token |G|), labels a∘b, train mask."""

    kind: ClassVar[str] = "group"


def make_dataset(task: GroupTask) -> GroupDataset:
    """Return the full dataset of `task`; the train split is a seeded random frac_train subset."""
    g = task.p
    a, b = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], dim=1)
    labels = task.symmetric_group.table[pairs[:, 0], pairs[:, 1]]
    tokens = torch.cat([pairs, torch.full((len(pairs), 1), g)], dim=1)
    return GroupDataset(tokens, labels, train_mask(len(pairs), task.n_train, task.data_seed), g)
