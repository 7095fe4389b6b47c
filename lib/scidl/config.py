"""Frozen, validated configs: one per concern (task, model, training) and the run that joins them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from scidl.errors import ScidlError, check_choice, check_int, check_number, not_allowed, scalar


class ConfigError(ScidlError):
    """A config field has a value that is not allowed; the message names field, value and rule."""


def _fail(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(not_allowed(f"{owner}.{name}", value, allowed))


def machine_memory() -> int:
    """Return this machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# A run may plan to use at most this share of the machine's memory (the rest: Python, notebooks).
MEMORY_SHARE = 0.5


def _check_memory(owner: str, name: str, value: Any, need: float, what: str) -> None:
    """Refuse, before anything is allocated, a size whose estimated memory exceeds the budget."""
    budget = MEMORY_SHARE * machine_memory()
    if need > budget:
        _fail(owner, name, value, f"{what} needs ~{need / 2**30:.3g} GiB, more than "
                                  f"{MEMORY_SHARE:.0%} of this machine's {machine_memory() / 2**30:.3g} GiB")


def is_prime(n: int) -> bool:
    """Return whether the integer n is prime."""
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def _normalize(cfg: Any) -> None:
    """Turn numpy scalars into Python numbers and ints into floats for float fields, so that equal
    values give one hash (weight_decay=1 and weight_decay=1.0 are the same run)."""
    for f in dataclasses.fields(cfg):
        value = scalar(getattr(cfg, f.name))  # numpy / torch scalars become Python numbers
        if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and value == 0:
            value = 0.0  # -0.0 and 0.0 are one value, so one hash
        object.__setattr__(cfg, f.name, value)


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    check_int(f"{owner}.{name}", value, minimum, error=ConfigError)


def _check_positive(owner: str, name: str, value: Any) -> None:
    check_number(f"{owner}.{name}", value, 0, low_open=True, error=ConfigError)


def _check_choice(owner: str, name: str, value: Any, choices) -> None:
    check_choice(f"{owner}.{name}", value, choices, error=ConfigError)


def n_pairs(p: int, op: str) -> int:
    """Return the number of (a, b) pairs of the task (b = 0 is dropped where b must be non-zero)."""
    from scidl.tasks import NONZERO_B

    return p * (p - 1) if op in NONZERO_B else p * p


@dataclass(frozen=True)
class TaskConfig:
    """Modular arithmetic (a op b) mod p, split into train/test by data_seed."""

    op: str = "add"
    p: int = 113
    frac_train: float = 0.3
    data_seed: int = 0

    def __post_init__(self) -> None:
        from scidl.tasks import OPERATIONS

        _normalize(self)
        _check_choice("TaskConfig", "op", self.op, OPERATIONS)
        _check_int("TaskConfig", "p", self.p, 3)
        if self.p > 10**6:
            _fail("TaskConfig", "p", self.p, "must be at most 10^6 (the task holds all p^2 pairs)")
        # the full grid of logits (p^3 float64) is what the measures hold at once
        _check_memory("TaskConfig", "p", self.p, 8.0 * self.p**3 + 64.0 * self.p**2, "the (a, b, c) grid")
        if not is_prime(self.p):
            _fail("TaskConfig", "p", self.p, "p must be a prime >= 3")
        if isinstance(self.frac_train, bool) or not isinstance(self.frac_train, (int, float)) \
                or not 0 < self.frac_train < 1:
            _fail("TaskConfig", "frac_train", self.frac_train, "must satisfy 0 < frac_train < 1")
        n = n_pairs(self.p, self.op)
        if not 1 <= self.n_train <= n - 1:
            _fail("TaskConfig", "frac_train", self.frac_train,
                  f"it leaves {self.n_train} of {n} pairs for training and {n - self.n_train} for "
                  f"testing; both splits must be non-empty")
        _check_int("TaskConfig", "data_seed", self.data_seed, 0)

    @property
    def n_train(self) -> int:
        """Return the number of training pairs."""
        return round(self.frac_train * n_pairs(self.p, self.op))


ARCHS = ("transformer", "mlp")
LOSS_DTYPES = ("float64", "float32")
ACTIVATIONS = ("relu", "gelu", "quadratic")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: Nanda et al.'s 1-layer transformer, or an MLP on one-hot (a, b)."""

    arch: str = "transformer"
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_layers: int = 1
    act: str = "relu"
    init_scale: float = 1.0

    def __post_init__(self) -> None:
        _normalize(self)
        _check_choice("ModelConfig", "arch", self.arch, ARCHS)
        _check_choice("ModelConfig", "act", self.act, ACTIVATIONS)
        for name in ("d_model", "n_heads", "d_mlp", "n_layers"):
            _check_int("ModelConfig", name, getattr(self, name), 1)
            # one weight matrix of this width must fit (d x d floats with AdamW's two moments)
            _check_memory("ModelConfig", name, getattr(self, name), 16.0 * getattr(self, name) ** 2,
                          "a square weight matrix of that width")
        if self.d_model % self.n_heads:
            _fail("ModelConfig", "n_heads", self.n_heads,
                  f"n_heads must divide d_model={self.d_model}")
        _check_positive("ModelConfig", "init_scale", self.init_scale)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class TrainConfig:
    """Full-batch AdamW with the paper's betas, periodic evaluation and checkpoints."""

    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    steps: int = 6000
    warmup_steps: int = 10
    eval_every: int = 50
    checkpoint_every: int = 200  # 0: only the first and final checkpoints (plus checkpoint_steps)
    checkpoint_steps: tuple[int, ...] = ()
    seed: int = 0
    # Cross-entropy precision. float64 as in Nanda et al.: in float32 the loss and its gradient
    # break down once the train loss nears 1e-7 (loss spikes, the "slingshot" of Thilak et al. 2022).
    loss_dtype: str = "float64"

    def __post_init__(self) -> None:
        _normalize(self)
        _check_positive("TrainConfig", "lr", self.lr)
        check_number("TrainConfig.weight_decay", self.weight_decay, 0, error=ConfigError)
        for name in ("beta1", "beta2"):
            b = getattr(self, name)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
                _fail("TrainConfig", name, b, "must satisfy 0 <= beta < 1")
        _check_int("TrainConfig", "steps", self.steps, 1)
        if self.steps > 10**8:
            _fail("TrainConfig", "steps", self.steps, "must be at most 10^8")
        _check_int("TrainConfig", "warmup_steps", self.warmup_steps, 0)
        _check_int("TrainConfig", "eval_every", self.eval_every, 1)
        _check_int("TrainConfig", "checkpoint_every", self.checkpoint_every, 0)
        _check_int("TrainConfig", "seed", self.seed, 0)
        _check_choice("TrainConfig", "loss_dtype", self.loss_dtype, LOSS_DTYPES)
        if not isinstance(self.checkpoint_steps, (list, tuple)):
            _fail("TrainConfig", "checkpoint_steps", self.checkpoint_steps, "must be a list of integers")
        steps = tuple(scalar(s) for s in self.checkpoint_steps)
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= self.steps
               for s in steps):
            _fail("TrainConfig", "checkpoint_steps", self.checkpoint_steps,
                  f"must be integers in [0, steps={self.steps}]")
        object.__setattr__(self, "checkpoint_steps", tuple(sorted(set(steps))))

    def is_checkpoint(self, step: int) -> bool:
        """Return whether a checkpoint is saved after `step` optimizer steps."""
        every = self.checkpoint_every and step % self.checkpoint_every == 0
        return bool(every) or step in self.checkpoint_steps or step == self.steps


@dataclass(frozen=True)
class RunConfig:
    """One training run: task + model + training. Its hash names the run in the store."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("task", TaskConfig), ("model", ModelConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                _fail("RunConfig", name, getattr(self, name), f"must be a {cls.__name__}")
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse a run whose full-batch training would not fit in memory (estimated per pair:
        float64 logits and their gradient, MLP activations, the residual stream)."""
        n, m = n_pairs(self.task.p, self.task.op), self.model
        per_pair = 32.0 * self.task.p + 16.0 * m.d_mlp + 48.0 * m.d_model * max(m.n_layers, 1)
        weights = 16.0 * (2 * self.task.p * max(m.d_model, m.d_mlp) + 6 * m.n_layers * m.d_model * m.d_mlp)
        _check_memory("RunConfig", "task.p", self.task.p, n * per_pair + weights,
                      f"full-batch training of {m.arch} (d_model={m.d_model}, d_mlp={m.d_mlp})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Return the RunConfig of `to_dict()` output (ConfigError names a missing or unknown field)."""
        sections = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig}
        if not isinstance(d, dict) or set(d) != set(sections) or not all(isinstance(v, dict) for v in d.values()):
            _fail("RunConfig", "from_dict", d, f"must be a dict with the sections {sorted(sections)}")
        parts = {}
        for name, cls_ in sections.items():
            known = {f.name for f in dataclasses.fields(cls_)}
            unknown = sorted(set(d[name]) - known)
            if unknown:
                _fail("RunConfig", name, unknown, f"unknown field(s); {cls_.__name__} has {sorted(known)}")
            parts[name] = cls_(**d[name])
        return cls(**parts)

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of every field: the run's name in the store."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Return the config as flat `section.field` columns (for DataFrames)."""
        return {f"{k}.{f}": v for k, sec in self.to_dict().items() for f, v in sec.items()}

    def replace(self, **flat: Any) -> "RunConfig":
        """Return a copy with fields overridden by name (`frac_train=0.5` or `task.frac_train=0.5`)."""
        d = self.to_dict()
        for key, value in flat.items():
            section, name = _locate(d, key)
            d[section][name] = value
        return RunConfig.from_dict(d)


def _locate(d: dict[str, dict[str, Any]], key: str) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section in d and name in d[section]:
            return section, name
    else:
        hits = [s for s in d if key in d[s]]
        if len(hits) == 1:
            return hits[0], key
    known = sorted(f for sec in d.values() for f in sec)
    raise ConfigError(f"config field {key!r} is not allowed: must be one of {known}")


def make_config(**flat: Any) -> RunConfig:
    """Return a RunConfig from flat field names, e.g. make_config(p=97, arch='mlp', lr=3e-3)."""
    return RunConfig().replace(**flat)
