"""The phenomenon registry: task kind -> its plug-in (task config, data, model, loss, definition).

The core (config, store, train, sweep, ensemble, hypotheses, interventions, plots, explorer) finds a
phenomenon here by the `kind` of a run's task config and imports none of them. A phenomenon is one
folder under `scidl/phenomena/` whose `__init__` calls `register(Phenomenon(...))`; importing
`scidl` imports `scidl.phenomena`, which registers every folder. No entry points, no metaclasses:
a dict from name to a small frozen object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pandas as pd

from scidl.config import ConfigError
from scidl.errors import ScidlError

# The kind of a task config stored without one: runs written before phenomena were plug-ins.
DEFAULT_KIND = "grokking"


class UnknownPhenomenon(ConfigError):
    """A task kind that no registered phenomenon has; the message lists the registered ones."""


@dataclass(frozen=True)
class Phenomenon:
    """One phenomenon's plug-in: everything the core asks of it.

    task: the frozen task-config dataclass (its ClassVar `kind` is this phenomenon's name).
    make_dataset(task) -> a Dataset (a SplitDataset: `tokens`, `labels`, `is_train`, `train`, `test`).
    make_model(model_cfg, task, seed) -> a HookedModel (seeded by `seed`).
    loss(model, tokens, labels, loss_dtype) -> the scalar training loss of a batch.
    evaluate(model, data, loss_dtype) -> one metrics row: train_loss/acc, test_loss/acc and more.
    summarize(metrics, **options) -> the operational definition's numbers for one run (a dict).
    shows(metrics, **options) -> whether the run shows the phenomenon.
    checkpoint_view(run, **options) -> an object with `.figure(model, step, neuron)` and `.n_items`:
        the explorer's view of one checkpoint.
    measures: name -> measure(model, ctx), the progress measures.
    archs: the ModelConfig.arch values this task has a model for.
    explain(run, **options) -> a scidl.explain.Explanation of the run's final model (or None).
    check_claims(run, explanation) -> a table (claim, predicted, observed, passed): each claim of the
        explanation checked by an intervention (Q4; or None).
    q3_task(run, **options) -> a scidl.yardsticks.q3.Q3Task: the run's Q3 problem (or None).
    one_hot_mlp: whether its "mlp" models are one-hot MLPs (W_in, W_out) that scidl.ensemble stacks.
    """

    kind: str
    task: type
    make_dataset: Callable[[Any], Any]
    make_model: Callable[..., Any]
    loss: Callable[..., Any]
    evaluate: Callable[..., dict]
    summarize: Callable[..., dict]
    shows: Callable[..., bool]
    checkpoint_view: Callable[..., Any] | None = None
    measures: Mapping[str, Callable] = field(default_factory=dict)
    archs: tuple[str, ...] = ("transformer",)
    explain: Callable[..., Any] | None = None
    check_claims: Callable[..., Any] | None = None
    q3_task: Callable[..., Any] | None = None
    one_hot_mlp: bool = True  # its "mlp" models are one-hot MLPs (W_in, W_out) the batched engine can stack


class SplitDataset:
    """Base of a phenomenon's frozen Dataset (fields `tokens`, `labels`, `is_train`): its two splits."""

    @property
    def train(self) -> tuple[Any, Any]:
        """Return (tokens, labels) of the train split."""
        return self.tokens[self.is_train], self.labels[self.is_train]

    @property
    def test(self) -> tuple[Any, Any]:
        """Return (tokens, labels) of the test split."""
        return self.tokens[~self.is_train], self.labels[~self.is_train]


PHENOMENA: dict[str, Phenomenon] = {}


def register(phenomenon: Phenomenon) -> Phenomenon:
    """Add `phenomenon` under its kind (the task config's `kind`) and return it."""
    if getattr(phenomenon.task, "kind", None) != phenomenon.kind:
        raise ScidlError(f"task={phenomenon.task.__name__} is not allowed for phenomenon {phenomenon.kind!r}: "
                         f"its ClassVar kind must be {phenomenon.kind!r}")
    PHENOMENA[phenomenon.kind] = phenomenon
    return phenomenon


def get_phenomenon(kind: Any) -> Phenomenon:
    """Return the registered phenomenon of task kind `kind`, else UnknownPhenomenon naming the kinds."""
    if not isinstance(kind, str) or kind not in PHENOMENA:
        raise UnknownPhenomenon(f"kind={kind!r} is not allowed: must be a registered phenomenon, one of "
                                f"{sorted(PHENOMENA)}")
    return PHENOMENA[kind]


def phenomenon_of(obj: Any) -> Phenomenon:
    """Return the phenomenon of a task config, a RunConfig or anything with `.task` or `.kind`."""
    task = getattr(obj, "task", obj)
    return get_phenomenon(getattr(task, "kind", None))


def make_dataset(task: Any):
    """Return the dataset of task config `task` (its phenomenon's make_dataset)."""
    return phenomenon_of(task).make_dataset(task)


def make_model(model_cfg: Any, task: Any, seed: int = 0):
    """Return a freshly initialised model of `model_cfg` for `task`, seeded by `seed`."""
    return phenomenon_of(task).make_model(model_cfg, task, seed=seed)


def summarize(task: Any, metrics: pd.DataFrame, **options: Any) -> dict:
    """Return the operational definition's summary of one run's metrics (see Phenomenon.summarize)."""
    return phenomenon_of(task).summarize(metrics, **options)
