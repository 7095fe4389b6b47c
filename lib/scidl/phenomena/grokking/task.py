"""Grokking's task: modular arithmetic (a op b) mod p, an operation registry and a deterministic
train/test split by pair."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from scidl.config import (ModelConfig, TrainConfig, check_field_choice, check_field_int, check_field_seed, check_memory, fail,
                          normalize)
from scidl.registry import SplitDataset

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


def is_prime(n: int) -> bool:
    """Return whether the integer n is prime."""
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def n_pairs(p: int, op: str) -> int:
    """Return the number of (a, b) pairs of the task (b = 0 is dropped where b must be non-zero)."""
    return p * (p - 1) if op in NONZERO_B else p * p


@dataclass(frozen=True)
class ModularTask:
    """Modular arithmetic (a op b) mod p, split into train/test by data_seed: grokking's task."""

    kind: ClassVar[str] = "grokking"
    kind_in_hash: ClassVar[bool] = False  # runs stored before plug-ins had no kind: keep their hashes

    op: str = "add"
    p: int = 113
    frac_train: float = 0.3
    data_seed: int = 0

    def __post_init__(self) -> None:
        normalize(self)
        check_field_choice("ModularTask", "op", self.op, OPERATIONS)
        check_field_int("ModularTask", "p", self.p, 3)
        if self.p > 10**6:
            fail("ModularTask", "p", self.p, "must be at most 10^6 (the task holds all p^2 pairs)")
        # the full grid of logits (p^3 float64) is what the measures hold at once
        check_memory("ModularTask", "p", self.p, 8.0 * self.p**3 + 64.0 * self.p**2, "the (a, b, c) grid")
        if not is_prime(self.p):
            fail("ModularTask", "p", self.p, "p must be a prime >= 3")
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, (int, float)) \
                or not 0 < self.frac_train < 1:
            fail("ModularTask", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        n = n_pairs(self.p, self.op)
        if not 1 <= self.n_train <= n - 1:
            fail("ModularTask", "frac_train", self.frac_train,
                  f"it leaves {self.n_train} of {n} pairs for training and {n - self.n_train} for "
                  f"testing; both splits must be non-empty")
        check_field_seed("ModularTask", "data_seed", self.data_seed)

    @property
    def n_train(self) -> int:
        """Return the number of training pairs."""
        return round(self.frac_train * n_pairs(self.p, self.op))



    @property
    def n_classes(self) -> int:
        """Return the number of answers (p): the width of the one-hot MLP's output."""
        return self.p

    def check_run(self, model: ModelConfig, train: TrainConfig) -> None:
        """Refuse a run whose full-batch training would not fit in memory (full_batch_bytes)."""
        check_memory("RunConfig", "task.p", self.p, full_batch_bytes(n_pairs(self.p, self.op), self.p, model),
                     f"full-batch training of {model.arch} (d_model={model.d_model}, d_mlp={model.d_mlp})")


TaskConfig = ModularTask  # the name before phenomena were plug-ins


def full_batch_bytes(n: int, p: int, m: ModelConfig) -> float:
    """Return the estimated memory of full-batch training on n pairs with p answers: per pair, float64
    logits and their gradient, MLP activations and the residual stream; plus the weights with AdamW's state."""
    per_pair = 32.0 * p + 16.0 * m.d_mlp + 48.0 * m.d_model * max(m.n_layers, 1)
    weights = 16.0 * (2 * p * max(m.d_model, m.d_mlp) + 6 * m.n_layers * m.d_model * m.d_mlp)
    return n * per_pair + weights


def train_mask(n: int, n_train: int, seed: int) -> Bool[Tensor, "n"]:
    """Return the train split of n pairs: the first n_train of a permutation drawn with `seed`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[order[:n_train]] = True
    return is_train


@dataclass(frozen=True)
class Dataset(SplitDataset):
    """All (a, b) pairs of a task as tokens `a b =`, labels, and the train mask."""

    kind: ClassVar[str] = "grokking"

    tokens: Int[Tensor, "n 3"]
    labels: Int[Tensor, "n"]
    is_train: Bool[Tensor, "n"]
    p: int


def make_pairs(p: int, op: str = "add") -> Int[Tensor, "n 2"]:
    """Return every (a, b) operand pair in row-major order, shape (p*p, 2) (b=0 dropped for div)."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    pairs = torch.stack([a.flatten(), b.flatten()], dim=1)  # (p*p, 2)
    return pairs[pairs[:, 1] != 0] if op in NONZERO_B else pairs


def make_dataset(task: ModularTask) -> Dataset:
    """Return the full dataset of `task`; the train split is a seeded random frac_train subset."""
    pairs = make_pairs(task.p, task.op)
    labels = OPERATIONS[task.op](pairs[:, 0], pairs[:, 1], task.p)
    equals = torch.full((len(pairs), 1), task.p)  # the '=' token is p
    tokens = torch.cat([pairs, equals], dim=1)  # (n, 3)
    return Dataset(tokens, labels, train_mask(len(pairs), round(task.frac_train * len(pairs)), task.data_seed), task.p)
