"""Modular arithmetic tasks: an operation registry and a deterministic train/test split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from scidl.config import TaskConfig

Operation = Callable[[Tensor, Tensor, int], Tensor]


def _div(a: Tensor, b: Tensor, p: int) -> Tensor:
    inverse = torch.tensor([pow(int(x), -1, p) if x else 0 for x in range(p)])
    return a * inverse[b] % p


def _random(a: Tensor, b: Tensor, p: int) -> Tensor:
    """A fixed random function of (a, b): the no-structure control task (shuffled labels)."""
    table = torch.randint(0, p, (p, p), generator=torch.Generator().manual_seed(p))
    return table[a, b]


OPERATIONS: dict[str, Operation] = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: a * b % p,
    "div": _div,
    "x2+y2": lambda a, b, p: (a * a + b * b) % p,
    "x2+xy+y2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x3+xy": lambda a, b, p: (a * a * a + a * b) % p,
    "random": _random,
}
# Operations whose second operand must be non-zero.
NONZERO_B = frozenset({"div"})


@dataclass(frozen=True)
class Dataset:
    """All (a, b) pairs of a task as tokens `a b =`, labels, and the train mask."""

    tokens: Int[Tensor, "n 3"]
    labels: Int[Tensor, "n"]
    is_train: Bool[Tensor, "n"]
    p: int

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.tokens[self.is_train], self.labels[self.is_train]

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.tokens[~self.is_train], self.labels[~self.is_train]


def make_pairs(p: int, op: str = "add") -> Int[Tensor, "n 2"]:
    """Return every (a, b) operand pair in row-major order, shape (p*p, 2) (b=0 dropped for div)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], dim=1)  # (p*p, 2)
    return pairs[pairs[:, 1] != 0] if op in NONZERO_B else pairs


def make_dataset(task: TaskConfig) -> Dataset:
    """Return the full dataset of `task`; the train split is a seeded random frac_train subset."""
    pairs = make_pairs(task.p, task.op)
    labels = OPERATIONS[task.op](pairs[:, 0], pairs[:, 1], task.p)
    equals = torch.full((len(pairs), 1), task.p)  # the '=' token is p
    tokens = torch.cat([pairs, equals], dim=1)  # (n, 3)
    gen = torch.Generator().manual_seed(task.data_seed)
    order = torch.randperm(len(pairs), generator=gen)
    is_train = torch.zeros(len(pairs), dtype=torch.bool)
    is_train[order[: round(task.frac_train * len(pairs))]] = True
    return Dataset(tokens, labels, is_train, task.p)
