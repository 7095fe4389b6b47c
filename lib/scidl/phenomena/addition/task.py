"""The addition task: a + b for n-digit operands, tokenised digit by digit, answered digit by digit.

A row is `a_{n-1} .. a_0 + b_{n-1} .. b_0 = c_n .. c_0` (most significant digit first, as in
Quirke & Barez 2023 and Nanda's 5-digit run; c_n is the carry-out, 0 or 1). The model reads every
token but the last and predicts the n + 1 answer digits at the positions of '=' and c_n .. c_1
(teacher forcing). Pairs are split into train and test by a seeded `frac_train` share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from scidl.config import ModelConfig, TrainConfig, check_field_int, check_field_seed, check_memory, fail, normalize
from scidl.registry import SplitDataset

PLUS, EQUALS = 10, 11  # tokens 0-9 are digits
D_VOCAB = 12
# Enumerate every pair up to this many; beyond it, `n_samples` distinct pairs are drawn.
MAX_ENUMERATED_PAIRS = 10**6
CARRY_TYPES = ("no_carry", "single_carry", "cascade")


@dataclass(frozen=True)
class AdditionTask:
    """n_digits-digit addition; every pair (n_samples=0, up to 3 digits) or n_samples distinct pairs
    drawn with data_seed; a frac_train share of them is the train split."""

    kind: ClassVar[str] = "addition"

    n_digits: int = 2
    frac_train: float = 0.3
    n_samples: int = 0  # 0: all 10^(2 n_digits) pairs; else this many distinct random pairs
    data_seed: int = 0

    def __post_init__(self) -> None:
        normalize(self)
        check_field_int("AdditionTask", "n_digits", self.n_digits, 1)
        if self.n_digits > 9:
            fail("AdditionTask", "n_digits", self.n_digits, "must be at most 9 (operands are int64 digits)")
        check_field_int("AdditionTask", "n_samples", self.n_samples, 0)
        if self.n_samples > self.n_all:
            fail("AdditionTask", "n_samples", self.n_samples, f"must be at most the {self.n_all} pairs of "
                                                              f"{self.n_digits}-digit operands")
        if self.n_samples == 0 and self.n_all > MAX_ENUMERATED_PAIRS:
            fail("AdditionTask", "n_samples", 0, f"must be > 0 for n_digits={self.n_digits}: its {self.n_all} "
                                                 f"pairs are too many to enumerate (at most {MAX_ENUMERATED_PAIRS})")
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, (int, float)) \
                or not 0 < self.frac_train < 1:
            fail("AdditionTask", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        if not 1 <= self.n_train <= self.n_pairs - 1:
            fail("AdditionTask", "frac_train", self.frac_train,
                 f"it leaves {self.n_train} of {self.n_pairs} pairs for training; both splits must be non-empty")
        check_field_seed("AdditionTask", "data_seed", self.data_seed)

    @property
    def n_all(self) -> int:
        """Return the number of (a, b) pairs of n_digits-digit operands (leading zeros allowed)."""
        return 10 ** (2 * self.n_digits)

    @property
    def n_pairs(self) -> int:
        """Return the number of pairs in the dataset."""
        return self.n_samples or self.n_all

    @property
    def n_train(self) -> int:
        """Return the number of training pairs."""
        return round(self.frac_train * self.n_pairs)

    @property
    def n_ctx(self) -> int:
        """Return the model's input length: both operands, '+', '=' and all answer digits but the last."""
        return 3 * self.n_digits + 2

    def check_run(self, model: ModelConfig, train: TrainConfig) -> None:
        """Refuse a run whose evaluation over every pair would not fit in memory (float64 logits and
        the residual stream per position)."""
        per_pair = self.n_ctx * (8.0 * D_VOCAB + 16.0 * model.d_model + 8.0 * model.d_mlp)
        check_memory("RunConfig", "task.n_samples", self.n_samples, self.n_pairs * per_pair,
                     f"evaluating {self.n_pairs} pairs")


@dataclass(frozen=True)
class Dataset(SplitDataset):
    """Every pair of an addition task: model inputs, answer digits (most significant first), the train
    mask, the operands, and each pair's carry type (an index into CARRY_TYPES)."""

    kind: ClassVar[str] = "addition"

    tokens: Int[Tensor, "n n_ctx"]
    labels: Int[Tensor, "n n_answers"]
    is_train: Bool[Tensor, "n"]
    operands: Int[Tensor, "n 2"]
    carry_type: Int[Tensor, "n"]
    n_digits: int


def digits(x: Int[Tensor, "n"], n: int) -> Int[Tensor, "n n"]:
    """Return the n decimal digits of each x, most significant first."""
    powers = 10 ** torch.arange(n - 1, -1, -1)
    return x.unsqueeze(-1) // powers % 10


def carry_types(a: Int[Tensor, "n"], b: Int[Tensor, "n"], n_digits: int) -> Int[Tensor, "n"]:
    """Return each pair's carry type (Quirke & Barez 2023): 0 no_carry (no column sum >= 10);
    2 cascade (a column whose digits sum to 9 receives a carry, so the carry propagates, e.g.
    15 + 85 or 09 + 91); 1 single_carry (carries, none propagating)."""
    da, db = digits(a, n_digits), digits(b, n_digits)
    sums = (da + db).flip(-1)  # (n, n_digits) column sums, units first
    carry_in = torch.zeros_like(a)
    any_carry, cascade = torch.zeros_like(a, dtype=torch.bool), torch.zeros_like(a, dtype=torch.bool)
    for i in range(n_digits):
        total = sums[:, i] + carry_in
        cascade |= (sums[:, i] == 9) & (carry_in == 1)
        carry_in = (total >= 10).long()
        any_carry |= carry_in.bool()
    return torch.where(cascade, 2, torch.where(any_carry, 1, 0))


def encode(a: Int[Tensor, "n"], b: Int[Tensor, "n"], n_digits: int) -> tuple[Tensor, Tensor]:
    """Return (tokens (n, 3 n_digits + 2), answer digits (n, n_digits + 1)) of the pairs a + b."""
    answer = digits(a + b, n_digits + 1)  # (n, n_digits + 1), carry-out first
    full = torch.cat([digits(a, n_digits), torch.full_like(a, PLUS).unsqueeze(1), digits(b, n_digits),
                      torch.full_like(a, EQUALS).unsqueeze(1), answer], dim=1)
    return full[:, :-1], answer


def sample_pairs(task: AdditionTask) -> Int[Tensor, "n 2"]:
    """Return the task's (a, b) pairs: all of them in order, or n_samples distinct ones drawn with data_seed."""
    base = 10 ** task.n_digits
    if task.n_samples == 0:
        index = torch.arange(task.n_all)
    else:  # distinct pair indices: draw with a margin, keep the first n_samples distinct ones
        gen = torch.Generator().manual_seed(task.data_seed + 1_000_003)
        index = torch.empty(0, dtype=torch.long)
        while len(index) < task.n_samples:
            draw = torch.randint(0, task.n_all, (2 * task.n_samples,), generator=gen)
            index = torch.unique(torch.cat([index, draw]))  # sorted; the split below reshuffles
        index = index[torch.randperm(len(index), generator=gen)[: task.n_samples]].sort().values
    return torch.stack([index // base, index % base], dim=1)


def make_dataset(task: AdditionTask) -> Dataset:
    """Return the dataset of `task`; the train split is a seeded random frac_train share of the pairs."""
    pairs = sample_pairs(task)
    tokens, labels = encode(pairs[:, 0], pairs[:, 1], task.n_digits)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(task.data_seed))
    is_train = torch.zeros(len(pairs), dtype=torch.bool)
    is_train[order[: task.n_train]] = True
    return Dataset(tokens, labels, is_train, pairs, carry_types(pairs[:, 0], pairs[:, 1], task.n_digits),
                   task.n_digits)
