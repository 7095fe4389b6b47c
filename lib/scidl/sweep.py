"""Sweeps: a grid (or random sample of it) over any config fields, run resumably through the run
store, in-process, on local worker processes or on a Dask cluster; small MLP groups are batched.
A sweep may hold runs that start from others in it (TrainConfig.init_from / mask_from: pruning rounds,
rewinding): each such family is one work unit, trained in order, parents first (`Chain`).
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from scidl.config import ConfigError, RunConfig
from scidl.errors import check_choice, check_int, check_type, not_allowed
from scidl.ensemble import can_batch, task_key, train_ensemble
from scidl.progressbar import bar as progress_bar
from scidl.registry import summarize
from scidl.store import RunStore, as_store
from scidl.train import configure_torch, train

EXECUTORS = ("auto", "inprocess", "processes", "dask")
# Batch only small MLPs: measured by bench/bench_sweep.py, stacked weights win for p*d_mlp around
# 4k (p=31, width 128) and lose for p*d_mlp around 25k (p=97, width 256), where a step is compute-bound.
BATCH_MAX_P_DMLP = 8192
BATCH_MIN_MEMBERS = 4
BATCH_MAX_MEMBERS = 32


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: `grid` maps config field names to the values to try; the base fills the rest.

    n_samples = 0 runs the full Cartesian grid; n_samples > 0 draws that many distinct grid points
    at random (sample_seed), for random search over large grids.
    """

    grid: Mapping[str, Any] = field(default_factory=dict)
    base: RunConfig = field(default_factory=RunConfig)
    n_samples: int = 0
    sample_seed: int = 0

    def __post_init__(self) -> None:
        check_type("SweepConfig.grid", self.grid, Mapping, "a mapping of config fields to lists of values",
                   ConfigError)
        check_type("SweepConfig.base", self.base, RunConfig, "a RunConfig (see scidl.make_config)", ConfigError)
        check_int("SweepConfig.sample_seed", self.sample_seed, 0, error=ConfigError)
        grid = dict(self.grid)
        for name, values in grid.items():
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            if not values:
                raise ConfigError(f"SweepConfig.grid[{name!r}]=() is not allowed: give at least one value")
            grid[name] = values
        object.__setattr__(self, "grid", tuple(grid.items()))  # frozen and hashable
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 0:
            raise ConfigError(f"SweepConfig.n_samples={self.n_samples!r} is not allowed: must be an integer >= 0")
        self.configs()  # validates every point: the error names the field and value

    def configs(self) -> list[RunConfig]:
        """Return the sweep's run configs, in a deterministic order."""
        names = [n for n, _ in self.grid]
        points = list(itertools.product(*(v for _, v in self.grid)))
        if self.n_samples and self.n_samples < len(points):
            points = random.Random(self.sample_seed).sample(points, self.n_samples)
        return [self.base.replace(**dict(zip(names, pt))) for pt in points]


def _init_worker() -> None:
    configure_torch(1)  # under contention one thread per process wins


# Runs first in every pool worker, before the worker unpickles any task (and so before it imports
# scidl or torch, which takes seconds): a worker whose driver is killed while it starts up ends too.
# It is source for the builtin exec, so unpickling the initializer imports nothing.
_DIE_WITH_PARENT = """
import ctypes, os, signal, threading, time
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:  # the driver died before we got here
    os._exit(1)
def _watch():  # where PR_SET_PDEATHSIG is missing
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
threading.Thread(target=_watch, daemon=True, name="scidl-parent-watchdog").start()
"""


def _die_with(parent: int) -> functools.partial:
    """Return the pool initializer that ends its worker as soon as the driver `parent` is gone,
    whatever killed the driver: the kernel sends SIGKILL when the parent dies (Linux
    PR_SET_PDEATHSIG), and a watchdog thread checks the parent pid twice a second where that is not
    available. It is `exec` of stdlib-only source, so it runs before anything heavy is imported."""
    return functools.partial(exec, _DIE_WITH_PARENT, {"parent": parent})


def _train_task(config: dict, root: str, progress: bool = False) -> str:
    _init_worker()
    cfg = RunConfig.from_dict(config)
    train(cfg, RunStore(root), progress=progress, on_divergence="stop")
    return cfg.hash


def _ensemble_task(configs: list[dict], root: str, progress: bool = False) -> list[str]:
    _init_worker()
    cfgs = [RunConfig.from_dict(c) for c in configs]
    train_ensemble(cfgs, RunStore(root), progress=progress)
    return [c.hash for c in cfgs]


def plan(configs: list[RunConfig], batch: bool | str = "auto") -> list[list[RunConfig]]:
    """Return the work units: lists of configs to train together (ensembles) or alone (length 1)."""
    if batch is False:
        return [[c] for c in configs]
    groups: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        key = (c.model.arch, c.model.d_mlp, c.model.act, c.model.n_layers, task_key(c.task), c.train.batch_size,
               c.train.steps, c.train.eval_every, c.train.warmup_steps, c.train.loss_dtype)
        groups.setdefault(key, []).append(c)
    units = []
    for group in groups.values():
        if not can_batch(group):
            units += [[c] for c in group]
            continue
        small = group[0].task.n_classes * group[0].model.d_mlp <= BATCH_MAX_P_DMLP
        if batch is True or (small and len(group) >= BATCH_MIN_MEMBERS):
            units += [group[i:i + BATCH_MAX_MEMBERS] for i in range(0, len(group), BATCH_MAX_MEMBERS)]
        else:
            units += [[c] for c in group]
    return units


def run_sweep(sweep: SweepConfig | list[RunConfig], store: RunStore | None = None,
              executor: str = "auto", workers: int = 2, address: str | None = None,
              batch: bool | str = "auto", progress: bool = True) -> pd.DataFrame:
    """Train every unfinished run of the sweep and return sweep_frame() of all of them.

    executor: "inprocess"; "processes" (`workers` local processes); "dask" (a LocalCluster of
    `workers` processes, or the scheduler at `address`); "auto" = "dask" when an address is given,
    else "inprocess" (bench/bench_sweep.py: process start-up outweighs the gain on short runs).
    Finished runs are loaded, never retrained, so a killed sweep resumes where it stopped. Runs that
    start from others in the sweep (init_from / mask_from) train after them, each family in one unit.
    """
    check_choice("executor", executor, EXECUTORS, error=ConfigError)
    check_int("workers", workers, 1, 256, error=ConfigError)
    if batch not in (True, False, "auto"):
        raise ConfigError(f"batch={batch!r} is not allowed: must be True, False or 'auto'")
    if address is not None and (not isinstance(address, str) or not address):
        raise ConfigError(f"address={address!r} is not allowed: must be a Dask scheduler address such as "
                          f"'tcp://127.0.0.1:8786', or None")
    store = as_store(store)
    configs = sweep.configs() if isinstance(sweep, SweepConfig) else _config_list(sweep)
    todo = [c for c in dict.fromkeys(configs) if not store.has(c)]
    linked, free = chains(todo)
    units = plan(free, batch) + linked
    if executor == "auto":
        executor = "dask" if address else "inprocess"
    bar = progress_bar(total=len(todo), desc=f"sweep ({len(configs) - len(todo)} done before)",
                       progress=progress and bool(todo))
    {"inprocess": _run_inprocess, "processes": _run_processes, "dask": _run_dask}[executor](
        units, store, workers, address, bar)
    bar.close()
    return sweep_frame(configs, store)


def _config_list(configs: Any) -> list[RunConfig]:
    """Return `configs` as a list of RunConfigs, else raise ConfigError naming the bad entry."""
    if isinstance(configs, (str, bytes, Mapping)) or not hasattr(configs, "__iter__"):
        raise ConfigError(f"sweep={configs!r} is not allowed: must be a SweepConfig or a list of RunConfigs")
    configs = list(configs)
    for i, c in enumerate(configs):
        if not isinstance(c, RunConfig):
            raise ConfigError(f"sweep[{i}]={c!r} is not allowed: must be a RunConfig (see scidl.make_config)")
    return configs


def _run_inprocess(units, store, workers, address, bar) -> None:
    for unit in units:  # in process, each unit also shows its own step bar under the sweep's
        _dispatch(unit, str(store.root), progress=not bar.disable)
        bar.update(len(unit))


class Chain(list):
    """A work unit of runs that depend on each other (a config names another as init_from or
    mask_from): trained one after another in this order, parents first, each as alone."""


def chains(todo: list[RunConfig]) -> tuple[list[Chain], list[RunConfig]]:
    """Split the unfinished configs into families linked by init_from / mask_from within `todo` (each a
    Chain in dependency order, parents first) and the configs linked to no other (returned apart)."""
    index = {c.hash: i for i, c in enumerate(todo)}
    root = list(range(len(todo)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    parents = {i: [index[h] for h in (c.train.init_from, c.train.mask_from) if h and h in index]
               for i, c in enumerate(todo)}
    for i, ps in parents.items():
        for j in ps:
            root[find(i)] = find(j)
    families: dict[int, list[int]] = {}
    for i in range(len(todo)):
        families.setdefault(find(i), []).append(i)
    out, free = [], []
    for members in families.values():
        if len(members) == 1:
            free.append(todo[members[0]])
            continue
        done, order = set(), []
        while len(order) < len(members):  # parents first; the sweep's order otherwise
            ready = [i for i in members if i not in done and all(j in done for j in parents[i])]
            if not ready:
                raise ConfigError(f"sweep config {todo[members[0]].hash} is not allowed: its runs name each other "
                                  "as parents in a cycle")
            done.update(ready)
            order += ready
        out.append(Chain(todo[i] for i in order))
    return out, free


def _dispatch(unit: list[RunConfig], root: str, progress: bool = False):
    if isinstance(unit, Chain):
        store = RunStore(root)
        return [c.hash if store.has(c) else _train_task(c.to_dict(), root, progress) for c in unit]
    if len(unit) == 1:
        return _train_task(unit[0].to_dict(), root, progress)
    return _ensemble_task([c.to_dict() for c in unit], root, progress)


def _run_processes(units, store, workers, address, bar, retries: int = 2) -> None:
    for attempt in range(retries + 1):
        pending = [u for u in units if not all(store.has(c) for c in u)]
        if not pending:
            return
        ctx = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with(os.getpid())) as pool:
                futures = {pool.submit(_dispatch, u, str(store.root)): u for u in pending}
                for fut in as_completed(futures):
                    fut.result()
                    bar.update(len(futures[fut]))
        except BrokenProcessPool:  # a worker died (killed, OOM): restart the unfinished units
            if attempt == retries:
                raise


def _run_dask(units, store, workers, address, bar) -> None:
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    cluster = None if address else LocalCluster(n_workers=workers, threads_per_worker=1,
                                                processes=True, dashboard_address=None)
    with Client(address or cluster) as client:
        futures = {client.submit(_dispatch, u, str(store.root), pure=False, retries=3,
                                 key=f"scidl-{u[0].hash}-{len(u)}"): u for u in units}
        for fut in dask_completed(futures):
            fut.result()
            bar.update(len(futures[fut]))
    if cluster is not None:
        cluster.close()


def sweep_frame(configs: list[RunConfig], store: RunStore | None = None, **definition: Any) -> pd.DataFrame:
    """Return one tidy row per finished run: config fields, its summary, and its phenomenon's
    operational definition (grokking: memorization and grok steps and the phase; `definition`
    options such as min_ratio go to the phenomenon's `summarize`)."""
    store = as_store(store)
    configs = _config_list(configs)
    rows, numeric = [], set()
    for c in dict.fromkeys(configs):
        if not store.has(c):
            continue
        run = store.load(c)
        flat = {k.split(".", 1)[1]: v for k, v in c.flat().items()}
        summary = {k: v for k, v in run.summary.items() if not isinstance(v, (dict, list))}
        defined = summarize(c.task, run.metrics, **definition)
        numeric |= {k for k, v in defined.items() if v is None or isinstance(v, (int, float))}
        rows.append({"hash": run.hash, **flat, **summary, **defined})
    df = pd.DataFrame(rows)
    for col in sorted(numeric):
        if col in df and df[col].map(lambda v: v is None or isinstance(v, (int, float, np.number))).all():
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)  # "never" is NaN: stays numeric
    return df


def sweep_metrics(configs: list[RunConfig], store: RunStore | None = None,
                  columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Return per-step metrics of every finished run, long format, with `columns` config fields."""
    store = as_store(store)
    configs = _config_list(configs)
    fields = {k.split(".", 1)[1] for c in configs for k in c.flat()} or {k.split(".", 1)[1] for k in RunConfig().flat()}
    for column in columns:
        if column not in fields:
            raise ConfigError(not_allowed("columns", column, f"must be config fields among {sorted(fields)}"))
    frames = []
    for c in dict.fromkeys(configs):
        if store.has(c):
            flat = {k.split(".", 1)[1]: v for k, v in c.flat().items()}
            frames.append(store.load(c).metrics.assign(hash=c.hash, **{k: flat[k] for k in columns}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
