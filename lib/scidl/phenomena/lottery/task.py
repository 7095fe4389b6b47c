"""The lottery-ticket task: classify MNIST-1D signals (Greydanus & Kobak 2020), scikit-learn's 8x8
digits as a second data set, or real Fashion-MNIST (Xiao et al. 2017) as a third (for paper scale), with
a fully connected net.

MNIST-1D is generated here with the `mnist1d` package's `make_dataset` (40-point 1-D signals of 10
digit templates, padded, sheared, translated, with correlated and i.i.d. noise; 4,000 train / 1,000
test at its defaults); `get_dataset` is never called (it downloads a pickle) and nothing is
unpickled. `make_dataset` seeds NumPy's and Python's global generators; their states are restored
after it. Fashion-MNIST (28x28 = 784 pixels, official split: 60,000 train / 10,000 test) is read
from the four IDX files of Debian's `dataset-fashion-mnist` package (FASHION_DIR), or from the folder
in the environment variable SCIDL_FASHION_MNIST, raw or gzip-compressed, by the small IDX reader
`read_idx` here (nothing is downloaded at run time, nothing is unpickled); its pixels are scaled
to [0, 1], then centred and scaled by one global mean and standard deviation of the training images. `bash
ci/setup_fashion_mnist.sh` installs the package (the default data sets and the tests never need it).
`permute_seed` applies one fixed permutation to the input features (after generation or loading, the
same for every row and both splits), so an experiment can destroy spatial order on purpose and
nothing else changes.
"""
from __future__ import annotations

import functools
import gzip
import os
import random
import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scidl.config import check_field_choice, check_field_int, check_field_seed, fail, normalize
from scidl.errors import ScidlError, check_number
from scidl.registry import SplitDataset

DATASETS = ("mnist1d", "digits", "fashion")
N_CLASSES = 10
MNIST1D_LENGTH = 40  # mnist1d's final_seq_length
DIGITS_ROWS = 1797
FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts its files
FASHION_ENV = "SCIDL_FASHION_MNIST"  # a folder holding the four IDX files instead
FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")  # each raw or with .gz
FASHION_TRAIN, FASHION_TEST, FASHION_SIDE = 60_000, 10_000, 28


@dataclass(frozen=True)
class LotteryTask:
    """A 10-class classification data set: MNIST-1D generated with `data_seed` and the generator's
    noise settings (`n_samples` signals, a `frac_train` share for training, as mnist1d's train_split),
    sklearn's digits split with `data_seed`, or Fashion-MNIST's official split (fixed: `data_seed`,
    `n_samples` and `frac_train` must stay at their defaults).
    `permute_seed` >= 0 permutes the input features by one fixed seeded permutation; -1 keeps their
    order."""

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
        if self.dataset == "fashion" and self.n_samples != 5000:
            fail("LotteryTask", "n_samples", self.n_samples, "must stay 5000 (unused) for fashion: its official "
                                                             "60,000 train / 10,000 test images are all used")
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, float) or not 0 < self.frac_train < 1:
            fail("LotteryTask", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        if self.dataset == "fashion" and self.frac_train != 0.8:
            fail("LotteryTask", "frac_train", self.frac_train, "must stay 0.8 (unused) for fashion: it keeps its "
                                                               "official split, 60,000 train / 10,000 test")
        if not 1 <= self.n_train <= self.n_rows - 1:
            fail("LotteryTask", "frac_train", self.frac_train, f"it leaves {self.n_train} of {self.n_rows} rows for "
                                                               "training; both splits must be non-empty")
        check_field_seed("LotteryTask", "data_seed", self.data_seed)
        if self.dataset == "fashion" and self.data_seed != 42:
            fail("LotteryTask", "data_seed", self.data_seed, "must stay 42 (unused) for fashion: its official split "
                                                             "is fixed, so another seed would name the same data")
        for name in ("corr_noise_scale", "iid_noise_scale"):
            check_number(f"LotteryTask.{name}", getattr(self, name), 0, 10)
        if not isinstance(self.shuffle_seq, bool):
            fail("LotteryTask", "shuffle_seq", self.shuffle_seq, "must be True or False")
        if self.dataset != "mnist1d" and (self.shuffle_seq or self.corr_noise_scale != 0.25
                                          or self.iid_noise_scale != 0.02):
            fail("LotteryTask", "dataset", self.dataset, "has no generator: shuffle_seq and the noise scales are "
                                                         "mnist1d's (use permute_seed to permute the pixels)")
        check_field_int("LotteryTask", "permute_seed", self.permute_seed, -1)

    @property
    def n_rows(self) -> int:
        """Rows in both splits (Fashion-MNIST: the official files'; the data loaded says how many a
        folder in SCIDL_FASHION_MNIST holds)."""
        if self.dataset == "fashion":
            return FASHION_TRAIN + FASHION_TEST
        # mnist1d makes n_samples // 10 signals per class
        return DIGITS_ROWS if self.dataset == "digits" else (self.n_samples // N_CLASSES) * N_CLASSES

    @property
    def n_train(self) -> int:
        return FASHION_TRAIN if self.dataset == "fashion" else int(self.n_rows * self.frac_train)

    @property
    def n_inputs(self) -> int:
        return {"digits": 64, "fashion": FASHION_SIDE * FASHION_SIDE}.get(self.dataset, MNIST1D_LENGTH)

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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Return the uint8 array held by one IDX file (raw or gzip-compressed, told by its first bytes):
    two zero bytes, type code 0x08 (unsigned byte), the number of dimensions, each dimension as a
    big-endian uint32, then exactly their product of bytes. Raise ScidlError naming the file for
    anything else (a bad magic number, another type, a short or long file, broken gzip)."""
    path = os.fspath(path)
    name = f"IDX file {path!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ScidlError(f"{name} cannot be read: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ScidlError(f"{name} is not an IDX file: its magic number {raw[:4].hex() or '(empty)'} must start "
                         "with two zero bytes (00 00 08 0n for n dimensions of unsigned bytes)")
    if raw[2] != 0x08:
        raise ScidlError(f"{name} holds type code 0x{raw[2]:02x}; only 0x08 (unsigned bytes) is read here")
    ndim = raw[3]
    if not 1 <= ndim <= 4:
        raise ScidlError(f"{name} declares {ndim} dimensions; 1 to 4 are allowed")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ScidlError(f"{name} is truncated: {len(raw)} bytes, shorter than its {start}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - start != size:
        what = "truncated" if len(raw) - start < size else "too long"
        raise ScidlError(f"{name} is {what}: its header declares shape {dims} ({size} bytes of data) and it "
                         f"holds {len(raw) - start}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def fashion_dir() -> str:
    """Return the folder Fashion-MNIST is read from: $SCIDL_FASHION_MNIST, else Debian's FASHION_DIR."""
    return os.path.abspath(os.environ.get(FASHION_ENV) or FASHION_DIR)


def _fashion_files(folder: str) -> list[str]:
    found, missing = [], []
    for stem in FASHION_FILES:
        paths = [os.path.join(folder, stem + ext) for ext in ("", ".gz")]
        hit = next((p for p in paths if os.path.isfile(p)), None)
        if hit is None:
            missing.append(stem + "[.gz]")
        found.append(hit)
    if missing:
        raise ScidlError(
            f"LotteryTask(dataset='fashion') needs Fashion-MNIST's four IDX files in {folder!r}, which lacks "
            f"{', '.join(missing)}: install Debian's package with `apt-get install dataset-fashion-mnist` (as "
            f"root; it puts them in {FASHION_DIR}) or `bash ci/setup_fashion_mnist.sh`, or set {FASHION_ENV} to a "
            "folder holding them")
    return found


def _fashion(task: LotteryTask, folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official split as the files hold it, pixels scaled to [0, 1] and then centred and scaled by
    one global mean and standard deviation of the training images (over all their pixels)."""
    paths = _fashion_files(folder)
    arrays = [read_idx(p) for p in paths]
    for images, labels, path, lpath in zip(arrays[::2], arrays[1::2], paths[::2], paths[1::2]):
        if images.ndim != 3 or images.shape[1:] != (FASHION_SIDE, FASHION_SIDE) or len(images) == 0:
            raise ScidlError(f"IDX file {path!r} holds shape {images.shape}; Fashion-MNIST's images are "
                             f"(n, {FASHION_SIDE}, {FASHION_SIDE}) with n >= 1")
        if labels.shape != (len(images),):
            raise ScidlError(f"IDX file {lpath!r} holds shape {labels.shape}; it must hold one label per image of "
                             f"{path!r}, shape ({len(images)},)")
        if labels.max() >= N_CLASSES:
            raise ScidlError(f"IDX file {lpath!r} holds label {int(labels.max())}; Fashion-MNIST's labels are 0 to "
                             f"{N_CLASSES - 1}")
    x, x_test = (a.reshape(len(a), -1).astype(np.float32) / np.float32(255) for a in (arrays[0], arrays[2]))
    mean, std = x.mean(dtype=np.float64), x.std(dtype=np.float64)
    if not std > 0:
        raise ScidlError(f"Fashion-MNIST's training images in {folder!r} are constant; they cannot be scaled")
    x, x_test = ((a - np.float32(mean)) / np.float32(std) for a in (x, x_test))
    return x, arrays[1].astype(np.int64), x_test, arrays[3].astype(np.int64)


def make_dataset(task: LotteryTask) -> Dataset:
    """Return the task's data: generated (mnist1d), loaded from scikit-learn (digits) or read from
    Fashion-MNIST's IDX files (fashion, from `fashion_dir()`), then permuted. Cached per task (and, for
    fashion, per folder; generating MNIST-1D takes about as long as training on it): the tensors are
    shared, so never modify them in place."""
    return _cached(task, fashion_dir() if task.dataset == "fashion" else None)


@functools.lru_cache(maxsize=8)
def _cached(task: LotteryTask, folder: str | None = None) -> Dataset:
    if task.dataset == "fashion":
        x, y, x_test, y_test = _fashion(task, folder or fashion_dir())
    else:
        x, y, x_test, y_test = (_mnist1d if task.dataset == "mnist1d" else _digits)(task)
    tokens = torch.tensor(np.concatenate([x, x_test]), dtype=torch.float32)
    perm = input_permutation(tokens.shape[1], task.permute_seed)
    labels = torch.tensor(np.concatenate([y, y_test]), dtype=torch.int64)
    is_train = torch.zeros(len(labels), dtype=torch.bool)
    is_train[:len(y)] = True
    return Dataset(tokens[:, perm].contiguous(), labels, is_train, perm)
