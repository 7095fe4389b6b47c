"""The lottery-ticket task: classify MNIST-1D signals (Greydanus & Kobak 2020), or scikit-learn's 8x8
digits as a second data set, with a fully connected net.

MNIST-1D is generated here with the `mnist1d` package's `make_dataset` (40-point 1-D signals of 10
digit templates, padded, sheared, translated, with correlated and i.i.d. noise; 4,000 train / 1,000
test at its defaults); `get_dataset` is never called (it downloads a pickle) and nothing is
unpickled. `make_dataset` seeds NumPy's and Python's global generators; their states are restored
after it. `permute_seed` applies one fixed permutation to the input features (after generation, the
same for every row and both splits), so an experiment can destroy spatial order on purpose and
nothing else changes.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scidl.config import check_field_choice, check_field_int, check_field_seed, fail, normalize
from scidl.errors import check_number
from scidl.registry import SplitDataset

DATASETS = ("mnist1d", "digits")
N_CLASSES = 10
MNIST1D_LENGTH = 40  # mnist1d's final_seq_length


@dataclass(frozen=True)
class LotteryTask:
    """A 10-class classification data set: MNIST-1D generated with `data_seed` and the generator's
    noise settings (`n_samples` signals, a `frac_train` share for training, as mnist1d's train_split),
    or sklearn's digits split with `data_seed`. `permute_seed` >= 0 permutes the input features by one
    fixed seeded permutation; -1 keeps their order."""

    kind: ClassVar[str] = "lottery"

    dataset: str = "mnist1d"
    n_samples: int = 5000
    frac_train: float = 0.8
    data_seed: int = 42  # mnist1d's own default
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 0.02
    shuffle_seq: bool = False  # mnist1d's own option: one permutation drawn from data_seed
    permute_seed: int = -1

    def __post_init__(self) -> None:
        normalize(self)
        check_field_choice("LotteryTask", "dataset", self.dataset, DATASETS)
        check_field_int("LotteryTask", "n_samples", self.n_samples, 20)
        if self.dataset == "mnist1d" and self.n_samples > 200_000:
            fail("LotteryTask", "n_samples", self.n_samples, "must be at most 200000 for mnist1d")
        if self.dataset == "digits" and self.n_samples != 5000:
            fail("LotteryTask", "n_samples", self.n_samples, "must stay 5000 (unused) for digits: its 1,797 "
                                                             "images are all used")
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, float) or not 0 < self.frac_train < 1:
            fail("LotteryTask", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        if not 1 <= self.n_train <= self.n_rows - 1:
            fail("LotteryTask", "frac_train", self.frac_train, f"it leaves {self.n_train} of {self.n_rows} rows for "
                                                               "training; both splits must be non-empty")
        check_field_seed("LotteryTask", "data_seed", self.data_seed)
        for name in ("corr_noise_scale", "iid_noise_scale"):
            check_number(f"LotteryTask.{name}", getattr(self, name), 0, 10)
        if not isinstance(self.shuffle_seq, bool):
            fail("LotteryTask", "shuffle_seq", self.shuffle_seq, "must be True or False")
        if self.dataset == "digits" and (self.shuffle_seq or self.corr_noise_scale != 0.25 or self.iid_noise_scale != 0.02):
            fail("LotteryTask", "dataset", self.dataset, "has no generator: shuffle_seq and the noise scales are "
                                                         "mnist1d's (use permute_seed to permute digits' pixels)")
        check_field_int("LotteryTask", "permute_seed", self.permute_seed, -1)

    @property
    def n_rows(self) -> int:
        # mnist1d makes n_samples // 10 signals per class
        return 1797 if self.dataset == "digits" else (self.n_samples // N_CLASSES) * N_CLASSES

    @property
    def n_train(self) -> int:
        return int(self.n_rows * self.frac_train)

    @property
    def n_inputs(self) -> int:
        return 64 if self.dataset == "digits" else MNIST1D_LENGTH

    @property
    def n_classes(self) -> int:
        return N_CLASSES


@dataclass(frozen=True)
class Dataset(SplitDataset):
    """Inputs (n, n_inputs) as float32, labels, the train mask and the input permutation applied."""

    kind: ClassVar[str] = "lottery"

    tokens: Float[Tensor, "n d_in"]
    labels: Int[Tensor, "n"]
    is_train: Bool[Tensor, "n"]
    permutation: Int[Tensor, "d_in"]  # column j of `tokens` is original feature permutation[j]


def input_permutation(n: int, seed: int) -> Tensor:
    """Return the fixed permutation of n features drawn with `seed` (the identity for seed -1)."""
    if seed < 0:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _mnist1d(task: LotteryTask) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset as generate

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = task.n_samples, task.frac_train, task.data_seed
    args.corr_noise_scale, args.iid_noise_scale, args.shuffle_seq = (task.corr_noise_scale, task.iid_noise_scale,
                                                                     task.shuffle_seq)
    np_state, py_state = np.random.get_state(), random.getstate()  # make_dataset seeds both globally
    try:
        d = generate(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def _digits(task: LotteryTask) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean()) / x.std()  # one scale for every pixel, as mnist1d centres its data
    order = np.random.default_rng(task.data_seed).permutation(len(y))
    cut = task.n_train
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def make_dataset(task: LotteryTask) -> Dataset:
    """Return the task's data: generated (mnist1d) or loaded from scikit-learn (digits), then permuted.
    Cached per task (generating MNIST-1D takes about as long as training on it): the tensors are
    shared, so never modify them in place."""
    return _cached(task)


@functools.lru_cache(maxsize=8)
def _cached(task: LotteryTask) -> Dataset:
    x, y, x_test, y_test = (_mnist1d if task.dataset == "mnist1d" else _digits)(task)
    tokens = torch.tensor(np.concatenate([x, x_test]), dtype=torch.float32)
    perm = input_permutation(tokens.shape[1], task.permute_seed)
    labels = torch.tensor(np.concatenate([y, y_test]), dtype=torch.int64)
    is_train = torch.zeros(len(labels), dtype=torch.bool)
    is_train[:len(y)] = True
    return Dataset(tokens[:, perm].contiguous(), labels, is_train, perm)
