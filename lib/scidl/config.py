"""Frozen, validated configs: one per concern (task, model, training) and the run that joins them."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from scidl.errors import ScidlError, check_choice, check_int, check_number, not_allowed, scalar


class ConfigError(ScidlError):
    """A config field has a value that is not allowed; the message names field, value and rule."""


def fail(owner: str, name: str, value: Any, allowed: str) -> None:
    """Raise ConfigError naming `owner.name`, its value and what is allowed."""
    raise ConfigError(not_allowed(f"{owner}.{name}", value, allowed))


def machine_memory() -> int:
    """Return this machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# A run may plan to use at most this share of the machine's memory (the rest: Python, notebooks).
MEMORY_SHARE = 0.5


def check_memory(owner: str, name: str, value: Any, need: float, what: str) -> None:
    """Refuse, before anything is allocated, a size whose estimated memory exceeds the budget."""
    budget = MEMORY_SHARE * machine_memory()
    if need > budget:
        fail(owner, name, value, f"{what} needs ~{need / 2**30:.3g} GiB, more than "
                                  f"{MEMORY_SHARE:.0%} of this machine's {machine_memory() / 2**30:.3g} GiB")


def normalize(cfg: Any) -> None:
    """Turn numpy scalars into Python numbers and ints into floats for float fields, so that equal
    values give one hash (weight_decay=1 and weight_decay=1.0 are the same run)."""
    for f in dataclasses.fields(cfg):
        value = scalar(getattr(cfg, f.name))  # numpy / torch scalars become Python numbers
        if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and value == 0:
            value = 0.0  # -0.0 and 0.0 are one value, so one hash
        object.__setattr__(cfg, f.name, value)


SEED_MAX = 2**32 - 1  # what every seeded generator here accepts (numpy's legacy seeds, torch's, Python's)


def check_field_int(owner: str, name: str, value: Any, minimum: int) -> None:
    check_int(f"{owner}.{name}", value, minimum, error=ConfigError)


def check_field_seed(owner: str, name: str, value: Any) -> None:
    """Raise ConfigError unless `value` is a seed: an integer in [0, SEED_MAX]."""
    check_int(f"{owner}.{name}", value, 0, SEED_MAX, error=ConfigError)


def check_field_positive(owner: str, name: str, value: Any) -> None:
    check_number(f"{owner}.{name}", value, 0, low_open=True, error=ConfigError)


def check_field_choice(owner: str, name: str, value: Any, choices) -> None:
    check_choice(f"{owner}.{name}", value, choices, error=ConfigError)


ARCHS = ("transformer", "mlp", "cnn")  # each phenomenon says which of them it has (Phenomenon.archs)
PRUNE_SCOPES = ("layer", "global")
MASK_CONTROLS = ("none", "random", "shuffle")
ADV_NORMS = ("linf", "l2")  # scidl.attacks.NORMS
LOSS_DTYPES = ("float64", "float32")
ACTIVATIONS = ("relu", "gelu", "quadratic")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: a hooked transformer (attention + MLP blocks, no LayerNorm; Nanda et al.'s with
    the defaults), an MLP (on one-hot inputs, or on vector inputs with `hidden` widths) or a 1-D CNN
    (`hidden` channels). The phenomenon builds it for its task; its `archs` say which it has."""

    arch: str = "transformer"
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_layers: int = 1
    act: str = "relu"
    init_scale: float = 1.0
    # hidden widths of an MLP on vector inputs, or a CNN's channels per conv layer; () is the arch's
    # default (lottery tickets: (300, 100) for "mlp", (25, 25, 25) for "cnn")
    hidden: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        normalize(self)
        if not isinstance(self.hidden, (list, tuple)) or not all(
                isinstance(scalar(w), int) and not isinstance(w, bool) and 1 <= scalar(w) <= 1 << 16 for w in self.hidden):
            fail("ModelConfig", "hidden", self.hidden, "must be a list of widths, integers in [1, 65536]")
        object.__setattr__(self, "hidden", tuple(int(scalar(w)) for w in self.hidden))
        check_field_choice("ModelConfig", "arch", self.arch, ARCHS)
        check_field_choice("ModelConfig", "act", self.act, ACTIVATIONS)
        for name in ("d_model", "n_heads", "d_mlp", "n_layers"):
            check_field_int("ModelConfig", name, getattr(self, name), 1)
            # one weight matrix of this width must fit (d x d floats with AdamW's two moments)
            check_memory("ModelConfig", name, getattr(self, name), 16.0 * getattr(self, name) ** 2,
                          "a square weight matrix of that width")
        if self.d_model % self.n_heads:
            fail("ModelConfig", "n_heads", self.n_heads,
                  f"n_heads must divide d_model={self.d_model}")
        check_field_positive("ModelConfig", "init_scale", self.init_scale)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with the paper's betas on the full train split (batch_size=0, grokking's default) or on
    seeded minibatches of `batch_size` rows; periodic evaluation and checkpoints."""

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
    batch_size: int = 0  # 0: the full train split every step; else rows per step, a fresh permutation per epoch
    # Pruning and rewinding (lottery tickets; any phenomenon): start from run `init_from`'s checkpoint at
    # `init_step` instead of a fresh init, and train under a mask: `mask_from`'s final weights pruned by
    # magnitude, `prune_rate` of its surviving weights per layer (scope "layer"; the output layer at
    # `prune_output_factor` times the rate, as Frankle & Carbin 2019 do) or over all layers ("global").
    # `mask_control` replaces that mask by a control of the same per-layer sparsity: "random" positions,
    # or "shuffle" within each row (dim 0) of a weight; `mask_control_layers` names the weights it
    # replaces (the others keep the pruned mask; empty: every weight). Runs are named by hash: "" means none.
    # `init_seed` >= 0 draws a fresh init with that seed while `seed` keeps setting the data order
    # (the reinitialised control of a ticket: another init, the same batches).
    init_from: str = ""
    init_step: int = 0
    mask_from: str = ""
    prune_rate: float = 0.0
    prune_scope: str = "layer"
    prune_output_factor: float = 0.5
    mask_control: str = "none"
    mask_control_layers: tuple[str, ...] = ()
    init_seed: int = -1
    # Adversarial training (Madry et al. 2018; issue 29): with `adv_eps` > 0 every step trains on PGD
    # examples of its batch (scidl.attacks: `adv_norm` ball of radius adv_eps, `adv_steps` steps of
    # `adv_step_size`, 0 meaning 2.5 adv_eps / adv_steps, a random start seeded by the run's seed and the
    # step, clipped to the data's observed range). Only for tasks with float inputs.
    adv_eps: float = 0.0
    adv_norm: str = "linf"
    adv_steps: int = 7
    adv_step_size: float = 0.0

    def __post_init__(self) -> None:
        normalize(self)
        check_field_positive("TrainConfig", "lr", self.lr)
        check_number("TrainConfig.weight_decay", self.weight_decay, 0, error=ConfigError)
        for name in ("beta1", "beta2"):
            b = getattr(self, name)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1:
                fail("TrainConfig", name, b, "must satisfy 0 <= beta < 1")
        check_field_int("TrainConfig", "steps", self.steps, 1)
        if self.steps > 10**8:
            fail("TrainConfig", "steps", self.steps, "must be at most 10^8")
        check_field_int("TrainConfig", "warmup_steps", self.warmup_steps, 0)
        check_field_int("TrainConfig", "eval_every", self.eval_every, 1)
        check_field_int("TrainConfig", "checkpoint_every", self.checkpoint_every, 0)
        check_field_seed("TrainConfig", "seed", self.seed)
        check_field_choice("TrainConfig", "loss_dtype", self.loss_dtype, LOSS_DTYPES)
        check_field_int("TrainConfig", "batch_size", self.batch_size, 0)
        self._check_pruning()
        self._check_adversarial()
        if not isinstance(self.checkpoint_steps, (list, tuple)):
            fail("TrainConfig", "checkpoint_steps", self.checkpoint_steps, "must be a list of integers")
        steps = tuple(scalar(s) for s in self.checkpoint_steps)
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= self.steps
               for s in steps):
            fail("TrainConfig", "checkpoint_steps", self.checkpoint_steps,
                  f"must be integers in [0, steps={self.steps}]")
        object.__setattr__(self, "checkpoint_steps", tuple(sorted(set(steps))))

    def _check_pruning(self) -> None:
        for name in ("init_from", "mask_from"):
            value = getattr(self, name)
            if not isinstance(value, str) or (value and not re.fullmatch(r"[0-9a-f]{12}", value)):
                fail("TrainConfig", name, value, "must be '' (none) or a 12-hex-digit run hash")
        check_field_int("TrainConfig", "init_step", self.init_step, 0)
        check_int("TrainConfig.init_seed", self.init_seed, -1, SEED_MAX, error=ConfigError)
        if self.init_seed >= 0 and self.init_from:
            fail("TrainConfig", "init_seed", self.init_seed, "must be -1 when init_from gives the initial weights")
        if self.init_step and not self.init_from:
            fail("TrainConfig", "init_step", self.init_step, "needs init_from (the run whose checkpoint it is)")
        check_field_choice("TrainConfig", "prune_scope", self.prune_scope, PRUNE_SCOPES)
        check_field_choice("TrainConfig", "mask_control", self.mask_control, MASK_CONTROLS)
        layers = self.mask_control_layers
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not all(
                isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_.]+", n) for n in layers) or len(set(layers)) < len(layers):
            fail("TrainConfig", "mask_control_layers", layers, "must be a list of distinct weight names such as "
                                                               "'fc0.weight' (empty: every weight)")
        object.__setattr__(self, "mask_control_layers", tuple(layers))
        if layers and self.mask_control == "none":
            fail("TrainConfig", "mask_control_layers", layers, "needs mask_control 'random' or 'shuffle'")
        if self.mask_from:
            check_number("TrainConfig.prune_rate", self.prune_rate, 0, 1, low_open=True, error=ConfigError)
            if self.prune_rate >= 1:
                fail("TrainConfig", "prune_rate", self.prune_rate, "must be below 1 (1 prunes every weight)")
            check_number("TrainConfig.prune_output_factor", self.prune_output_factor, 0, error=ConfigError)
            if self.prune_rate * self.prune_output_factor >= 1:
                fail("TrainConfig", "prune_output_factor", self.prune_output_factor,
                     f"times prune_rate={self.prune_rate} must be below 1")
        else:
            for name, default in (("prune_rate", 0.0), ("prune_scope", "layer"), ("prune_output_factor", 0.5),
                                  ("mask_control", "none")):
                if getattr(self, name) != default:
                    fail("TrainConfig", name, getattr(self, name), f"needs mask_from (the run to prune); "
                                                                   f"without one it must be {default!r}")

    def _check_adversarial(self) -> None:
        check_number("TrainConfig.adv_eps", self.adv_eps, 0, error=ConfigError)
        check_field_choice("TrainConfig", "adv_norm", self.adv_norm, ADV_NORMS)
        check_int("TrainConfig.adv_steps", self.adv_steps, 1, 10_000, error=ConfigError)
        check_number("TrainConfig.adv_step_size", self.adv_step_size, 0, error=ConfigError)
        if not self.adv_eps:
            for name, default in (("adv_norm", "linf"), ("adv_steps", 7), ("adv_step_size", 0.0)):
                if getattr(self, name) != default:
                    fail("TrainConfig", name, getattr(self, name), f"needs adv_eps > 0 (adversarial training); "
                                                                   f"without it it must be {default!r}")

    @property
    def adversarial(self) -> bool:
        """Return whether every step trains on adversarial examples of its batch."""
        return self.adv_eps > 0

    @property
    def masked(self) -> bool:
        """Return whether this run trains under a pruning mask or starts from another run's weights."""
        return bool(self.mask_from or self.init_from or self.init_seed >= 0)

    def is_checkpoint(self, step: int) -> bool:
        """Return whether a checkpoint is saved after `step` optimizer steps."""
        every = self.checkpoint_every and step % self.checkpoint_every == 0
        return bool(every) or step in self.checkpoint_steps or step == self.steps


# Fields added after runs were first stored, with the value that reproduces the old behaviour: a
# field holding that value is left out of the hash, so every stored run keeps its name.
HASH_OMITTED_DEFAULTS = {"train": {"batch_size": 0, "init_from": "", "init_step": 0, "mask_from": "",
                                   "prune_rate": 0.0, "prune_scope": "layer", "prune_output_factor": 0.5,
                                   "mask_control": "none", "mask_control_layers": (), "init_seed": -1,
                                   "adv_eps": 0.0, "adv_norm": "linf", "adv_steps": 7, "adv_step_size": 0.0},
                         "model": {"hidden": ()}}
# The same fields, flat: at these values `hypotheses.scope_of` leaves them out of a scope, so a scope
# (and the content hash of a hypothesis registered with it) written before they existed stays the same.
SCOPE_OMITTED_DEFAULTS = {f"{section}.{name}": value for section, fields in HASH_OMITTED_DEFAULTS.items()
                          for name, value in fields.items() if name != "batch_size"}  # batch_size predates scopes


def default_task():
    """Return the default task config: that of the default phenomenon (grokking)."""
    from scidl.registry import DEFAULT_KIND, get_phenomenon

    return get_phenomenon(DEFAULT_KIND).task()


def task_class(kind: Any) -> type:
    """Return the task-config class of a registered phenomenon (ConfigError naming the kinds if none)."""
    from scidl.registry import get_phenomenon

    return get_phenomenon(kind).task


@dataclass(frozen=True)
class RunConfig:
    """One training run: task (any registered phenomenon's task config) + model + training. Its hash
    names the run in the store."""

    task: Any = field(default_factory=default_task)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from scidl.registry import PHENOMENA

        kind = getattr(type(self.task), "kind", None)
        if kind not in PHENOMENA or type(self.task) is not PHENOMENA[kind].task:
            fail("RunConfig", "task", self.task, f"must be the task config of a registered phenomenon, "
                                                 f"one of {sorted(PHENOMENA)}")
        for name, cls in (("model", ModelConfig), ("train", TrainConfig)):
            if not isinstance(getattr(self, name), cls):
                fail("RunConfig", name, getattr(self, name), f"must be a {cls.__name__}")
        archs = PHENOMENA[kind].archs
        if self.model.arch not in archs:
            fail("ModelConfig", "arch", self.model.arch, f"the {kind} task has models for {list(archs)}")
        n_train = getattr(self.task, "n_train", None)
        if n_train is not None and self.train.batch_size > n_train:
            fail("TrainConfig", "batch_size", self.train.batch_size,
                 f"must be 0 (full batch) or at most the {n_train} training rows of the task")
        check_run = getattr(self.task, "check_run", None)
        if check_run is not None:  # e.g. a memory estimate that needs task, model and training together
            check_run(self.model, self.train)

    def to_dict(self) -> dict[str, Any]:
        """Return every field as nested dicts; the task section starts with its `kind`."""
        d = dataclasses.asdict(self)
        d["task"] = {"kind": self.task.kind, **d["task"]}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Return the RunConfig of `to_dict()` output (ConfigError names a missing or unknown field).
        A task section without `kind` is grokking's (runs stored before phenomena were plug-ins)."""
        from scidl.registry import DEFAULT_KIND

        sections = ("task", "model", "train")
        if not isinstance(d, dict) or set(d) != set(sections) or not all(isinstance(v, dict) for v in d.values()):
            fail("RunConfig", "from_dict", d, f"must be a dict with the sections {sorted(sections)}")
        task = dict(d["task"])
        classes = {"task": task_class(task.pop("kind", DEFAULT_KIND)), "model": ModelConfig, "train": TrainConfig}
        parts = {}
        for name, cls_ in classes.items():
            values = task if name == "task" else d[name]
            known = {f.name for f in dataclasses.fields(cls_)}
            unknown = sorted(set(values) - known)
            if unknown:
                fail("RunConfig", name, unknown, f"unknown field(s); {cls_.__name__} has {sorted(known)}")
            parts[name] = cls_(**values)
        return cls(**parts)

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit hash of every field: the run's name in the store. Grokking's task kind
        and fields at their HASH_OMITTED_DEFAULTS are left out, so runs stored before those existed
        keep their names."""
        d = self.to_dict()
        if not getattr(type(self.task), "kind_in_hash", True):
            del d["task"]["kind"]
        for section, fields in HASH_OMITTED_DEFAULTS.items():
            for name, value in fields.items():
                if d[section].get(name, value) == value:
                    d[section].pop(name, None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Return the config as flat `section.field` columns (for DataFrames)."""
        return {f"{k}.{f}": v for k, sec in self.to_dict().items() for f, v in sec.items()}

    def replace(self, **flat: Any) -> "RunConfig":
        """Return a copy with fields overridden by name (`frac_train=0.5` or `task.frac_train=0.5`).
        A new `kind` starts the task from that phenomenon's defaults: `replace(kind="addition")`, and
        the model from its first arch when the current one is not among its archs."""
        d = self.to_dict()
        kinds = [flat.pop(k) for k in ("kind", "task.kind") if k in flat]
        if kinds and kinds[-1] != d["task"]["kind"]:
            d["task"] = {"kind": kinds[-1], **dataclasses.asdict(task_class(kinds[-1])())}
            from scidl.registry import get_phenomenon

            archs = get_phenomenon(kinds[-1]).archs
            if d["model"]["arch"] not in archs and "arch" not in flat and "model.arch" not in flat:
                d["model"]["arch"] = archs[0]  # the phenomenon's own model unless one is asked for
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
    """Return a RunConfig from flat field names, e.g. make_config(p=97, arch='mlp', lr=3e-3) or
    make_config(kind="addition", n_digits=2); `kind` picks the phenomenon (default: grokking)."""
    return RunConfig().replace(**flat)
