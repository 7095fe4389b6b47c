"""Iterative magnitude pruning as stored runs, its controls, linear mode connectivity and the
receptive-field locality of a first-layer mask.

`imp_configs(dense, rounds, rate, rewind_step)` is the ticket chain: round r prunes `rate` of the
weights round r - 1 kept (its final weights, by magnitude; scidl.masks), rewinds the survivors to the
dense run's checkpoint at `rewind_step` (0: Frankle & Carbin's original init; k > 0: Frankle et al.
2020's rewinding) and retrains for the dense run's remaining steps. Every round is a RunConfig whose
hash names its parents, so a chain is trained round by round with `run_sweep` and resumes like any
sweep. `control_configs(ticket, dense)` gives the controls at the same density: the same mask from a
fresh init ("reinit"), a random mask of the same per-layer density ("random"), the mask shuffled
within each unit's row ("shuffle"). `chains` / `train_chains` / `chain_table` plan, train (one sweep;
each seed's chain is one work unit) and tabulate several chains; `scaled` widens or narrows a
net; `point_limit` is the lowest density a config's ticket wins at by the point rule over its seeds.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from scidl.config import SEED_MAX, RunConfig
from scidl.errors import ScidlError, check_int, check_number, check_type
from scidl.registry import make_dataset

ARMS = ("reinit", "random", "shuffle")

REINIT_SEED_OFFSET = 7919  # a control's fresh init: the dense seed moved by this (a prime), wrapped


def base_config(dataset: str = "mnist1d", hidden=(300, 100), steps: int = 1000, batch_size: int = 60,
                lr: float = 1.2e-3, rewind_step: int = 0, **fields) -> RunConfig:
    """Return the dense run every chain of notebooks 08 and 09 starts from (Frankle & Carbin's Adam
    recipe: lr 1.2e-3, batch 60, no weight decay; 10 evaluations; a checkpoint at `rewind_step`), so
    both build the same configs and the scorecard reuses 08's runs."""
    from scidl.config import make_config

    checkpoints = (rewind_step,) if rewind_step else ()
    return make_config(kind="lottery", dataset=dataset, hidden=tuple(hidden), lr=lr, weight_decay=0.0, beta2=0.999,
                       warmup_steps=0, batch_size=batch_size, steps=steps, eval_every=max(steps // 10, 1),
                       checkpoint_every=0, checkpoint_steps=checkpoints, **fields)


def _prunable(cfg: RunConfig) -> list:
    from scidl import masks
    from scidl.registry import make_model

    check_type("cfg", cfg, RunConfig, "a RunConfig")
    with torch.device("meta"):
        return masks.prunable(make_model(cfg.model, cfg.task))


def n_weights(cfg: RunConfig) -> int:
    """Return the number of prunable weights (dim >= 2) of `cfg`'s model, built on the meta device."""
    return sum(p.numel() for _, p in _prunable(cfg))


def weight_names(cfg: RunConfig) -> list[str]:
    """Return the names of the prunable weights of `cfg`'s model (the layers a mask has), input side first."""
    return [n for n, _ in _prunable(cfg)]


def imp_configs(dense: RunConfig, rounds: int, rate: float = 0.2, rewind_step: int = 0, scope: str = "layer",
                output_factor: float = 0.5, seed: int | None = None) -> list[RunConfig]:
    """Return the ticket chain's configs, round 1 to `rounds` (round 0 is `dense` itself). `seed`
    (default: the dense run's) sets each round's data order; the weights come from the dense run."""
    check_type("dense", dense, RunConfig, "the dense run's RunConfig")
    rounds = check_int("rounds", rounds, 1, 100)
    rewind_step = check_int("rewind_step", rewind_step, 0, dense.train.steps - 1)
    if dense.train.masked:
        raise ScidlError(f"dense={dense.hash} is not allowed: it is itself pruned or rewound; give the dense run")
    if not dense.train.is_checkpoint(rewind_step) and rewind_step != 0:
        raise ScidlError(f"rewind_step={rewind_step} is not allowed: the dense run saves no checkpoint there "
                         f"(checkpoint_every={dense.train.checkpoint_every}, checkpoint_steps="
                         f"{dense.train.checkpoint_steps})")
    out, parent = [], dense
    remaining = dense.train.steps - rewind_step
    for _ in range(rounds):  # the rounds' step counts start at the rewind point: checkpoints past the end go
        cfg = dense.replace(init_from=dense.hash, init_step=rewind_step, mask_from=parent.hash, prune_rate=rate,
                            prune_scope=scope, prune_output_factor=output_factor, steps=remaining,
                            checkpoint_steps=tuple(s for s in dense.train.checkpoint_steps if s <= remaining),
                            seed=dense.train.seed if seed is None else seed)
        out.append(cfg)
        parent = cfg
    return out


def control_configs(ticket: RunConfig, dense: RunConfig) -> dict[str, RunConfig]:
    """Return the controls of `ticket` at its density: "reinit" (its mask on a fresh init, seeded
    apart from the dense run's, with the ticket's data order), "random" and "shuffle" (its rewound
    weights under a mask of the same per-layer density: random positions, or each row's entries
    permuted)."""
    check_type("ticket", ticket, RunConfig, "a ticket's RunConfig (imp_configs)")
    check_type("dense", dense, RunConfig, "the dense run's RunConfig")
    if not ticket.train.mask_from or ticket.train.mask_control != "none":
        raise ScidlError(f"ticket={ticket.hash} is not allowed: must be a ticket round (mask_from set, no control)")
    fresh = (dense.train.seed + REINIT_SEED_OFFSET) % (SEED_MAX + 1)
    return {"reinit": ticket.replace(init_from="", init_step=0, init_seed=fresh),
            "random": ticket.replace(mask_control="random"),
            "shuffle": ticket.replace(mask_control="shuffle")}


def layer_controls(ticket: RunConfig, layers, control: str = "random") -> dict[str, RunConfig]:
    """Return, per weight name in `layers`, `ticket` with that one layer's mask replaced by its `control`
    ("random" or "shuffle"; the other layers keep the ticket's mask and the rewound weights): retrained,
    the drop from the ticket's accuracy says how much that layer's mask matters."""
    check_type("ticket", ticket, RunConfig, "a ticket's RunConfig (imp_configs)")
    if not ticket.train.mask_from or ticket.train.mask_control != "none":
        raise ScidlError(f"ticket={ticket.hash} is not allowed: must be a ticket round (mask_from set, no control)")
    if control not in ("random", "shuffle"):
        raise ScidlError(f"control={control!r} is not allowed: must be 'random' or 'shuffle'")
    if isinstance(layers, str) or not layers:
        raise ScidlError(f"layers={layers!r} is not allowed: must be a non-empty list of weight names")
    return {n: ticket.replace(mask_control=control, mask_control_layers=(n,)) for n in layers}


def interpolate(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], alpha: float) -> dict:
    """Return (1 - alpha) state_a + alpha state_b, tensor by tensor."""
    return {k: (1 - alpha) * state_a[k] + alpha * state_b[k] for k in state_a}


def instability(run_a, run_b, n_points: int = 11) -> dict:
    """Return linear mode connectivity of two runs (Frankle et al. 2020): test error along the straight
    line between their final weights (`alphas`, `errors`), and the error barrier: the highest error on
    the line minus the mean of the two ends' errors (0 when the ends are linearly connected)."""
    for name, run in (("run_a", run_a), ("run_b", run_b)):
        if not hasattr(run, "load_model") or not hasattr(run, "config"):
            raise ScidlError(f"{name}={run!r:.120} is not allowed: must be a stored Run")
    if run_a.config.task != run_b.config.task or run_a.config.model != run_b.config.model:
        raise ScidlError(f"run_b={run_b.hash} is not allowed: it has another task or model than run_a={run_a.hash}")
    n_points = check_int("n_points", n_points, 3, 1001)
    data = make_dataset(run_a.config.task)
    model = run_a.load_model()
    a, b = run_a.load_state(), run_b.load_state()
    if all(torch.equal(a[k], b[k]) for k in a):
        import warnings

        warnings.warn(f"runs {run_a.hash} and {run_b.hash} end with identical weights (deterministic training "
                      "from one init, e.g. full batch): their barrier of 0 says nothing", stacklevel=2)
    x, y = data.test
    alphas = np.linspace(0.0, 1.0, n_points)
    errors = []
    with torch.no_grad():
        for alpha in alphas:
            model.load_state_dict(interpolate(a, b, float(alpha)))
            errors.append(float((model(x).argmax(-1) != y).float().mean()))
    barrier = max(errors) - (errors[0] + errors[-1]) / 2
    return {"alphas": alphas.tolist(), "errors": errors, "barrier": float(barrier)}


def locality(mask: torch.Tensor, order: torch.Tensor | None = None) -> dict:
    """Return how local a first-layer mask's receptive fields are: per unit (row) with at least two
    surviving inputs, the mean pairwise distance of their positions, and its ratio to the exact
    expectation for as many inputs at random distinct positions, (n + 1) / 3 for n inputs (> 1: more
    local than chance). `order[j]` is the position of column j (a permuted input's original order);
    default: column j is at position j."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise ScidlError(f"mask={getattr(mask, 'shape', mask)!r} is not allowed: must be a 2-d bool tensor "
                         "(units x inputs)")
    n = mask.shape[1]
    pos = torch.arange(n, dtype=torch.float64) if order is None else order.to(torch.float64)
    if pos.shape != (n,) or sorted(pos.tolist()) != list(range(n)):
        raise ScidlError(f"order={order!r:.120} is not allowed: must be a permutation of the {n} input positions")
    spreads = []
    for row in mask:
        p = pos[row]
        k = len(p)
        if k >= 2:
            spreads.append(float((p[:, None] - p[None, :]).abs().sum() / (k * (k - 1))))
    null = (n + 1) / 3
    mean = float(np.mean(spreads)) if spreads else math.nan
    return {"units": len(spreads), "mean_spread": mean, "null_spread": null,
            "ratio": null / mean if spreads and mean > 0 else math.nan}


def column_null(mask: torch.Tensor, order: torch.Tensor | None = None, draws: int = 20, seed: int = 0) -> float:
    """Return the mean spread (locality) of `mask` with each column's entries shuffled across units,
    `draws` times (seeded): which inputs survive is kept, which unit holds them is not. The columns are
    first put in the signal's order (`order`, as in locality), so a permuted net's null is drawn as an
    unpermuted one's."""
    mask = mask if order is None else mask[:, torch.argsort(order)]
    g = torch.Generator().manual_seed(seed)
    spreads = []
    for _ in range(draws):
        perm = torch.stack([torch.randperm(mask.shape[0], generator=g) for _ in range(mask.shape[1])], 1)
        spreads.append(locality(mask.gather(0, perm))["mean_spread"])
    return float(np.mean(spreads))


def locality_ratio(mask: torch.Tensor, order: torch.Tensor | None = None) -> float:
    """Return column_null / observed spread of a first-layer mask (> 1: each unit's inputs are closer
    together than which inputs survive explains), positions read through `order`."""
    return column_null(mask, order) / locality(mask, order)["mean_spread"]


def rounds_density(rate: float, rounds: int, output_factor: float = 0.5, sizes: list[int] | None = None) -> float:
    """Return the share of weights a layer-wise chain keeps after `rounds` (hidden layers keep (1 - rate)
    per round, the output layer (1 - rate x output_factor); `sizes` weights per layer, output last)."""
    check_number("rate", rate, 0, 1, low_open=True)
    rounds = check_int("rounds", rounds, 0)
    if not sizes:
        return (1 - rate) ** rounds
    keep = [(1 - rate) ** rounds] * (len(sizes) - 1) + [(1 - rate * output_factor) ** rounds]
    return float(sum(k * s for k, s in zip(keep, sizes)) / sum(sizes))


def chains(base: RunConfig, seeds, rounds: int, rate: float = 0.2, rewind_step: int = 0, **fields) -> dict:
    """Return {seed: (dense config, [ticket rounds 1..rounds], [{control: config} per round])} for the
    dense runs `base.replace(seed=seed, **fields)`."""
    check_type("base", base, RunConfig, "a RunConfig (scidl.make_config(kind='lottery', ...))")
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ScidlError(f"seeds={seeds!r:.80} is not allowed: must be a list of seeds")
    out = {}
    for s in seeds:
        dense = base.replace(seed=s, **fields)
        tickets = imp_configs(dense, rounds, rate=rate, rewind_step=rewind_step)
        out[s] = (dense, tickets, [control_configs(t, dense) for t in tickets])
    return out


def chain_configs(plan: dict, arms=("reinit", "random"), last: int | None = None) -> list[RunConfig]:
    """Return every config of `plan` (chains()): dense runs, tickets and the `arms` controls to round `last`."""
    _check_arms(arms)
    return [c for d, t, cs in plan.values() for c in [d, *t[:last], *(x[a] for x in cs[:last] for a in arms)]]


def train_chains(*jobs, executor: str = "inprocess", workers: int = 1, store=None, extra=()) -> None:
    """Train jobs (plan, arms, last round) together in one sweep: each seed's chain (its dense run, then
    round by round the ticket and the `arms` controls) is one work unit, parents first (scidl.sweep.Chain),
    so the workers start once and split the chains; `extra` configs join the same sweep. Finished runs
    are loaded, not retrained."""
    from scidl.sweep import run_sweep

    configs = list(extra)
    for job in jobs:
        if not (isinstance(job, tuple) and len(job) == 3 and isinstance(job[0], dict)):
            raise ScidlError(f"job={job!r:.120} is not allowed: must be (plan from chains(), arms, last round)")
        configs += chain_configs(*job)
    run_sweep(configs, store=store, executor=executor, workers=workers)


def chain_table(plan: dict, arms=("reinit", "random"), last: int | None = None, store=None):
    """Return one row per seed, round and arm (dense at round 0): density (the mask's), final test
    accuracy, and the run's hash."""
    import pandas as pd

    from scidl import masks
    from scidl.store import RunStore

    _check_arms(arms)
    store, rows = store or RunStore(), []
    for s, (dense, tickets, controls) in plan.items():
        run = store.load(dense)
        rows.append({"seed": s, "round": 0, "arm": "dense", "density": 1.0,
                     "test_acc": run.summary["final_test_acc"], "hash": run.hash})
        for r, (t, c) in enumerate(zip(tickets[:last], controls[:last]), 1):
            for arm, cfg in [("ticket", t)] + [(a, c[a]) for a in arms]:
                run = store.load(cfg)
                rows.append({"seed": s, "round": r, "arm": arm, "density": masks.density(run.mask)["total"],
                             "test_acc": run.summary["final_test_acc"], "hash": run.hash})
    return pd.DataFrame(rows)


def _check_arms(arms) -> None:
    if isinstance(arms, str) or not all(a in ARMS for a in arms):
        raise ScidlError(f"arms={arms!r} is not allowed: must be a list of controls from {list(ARMS)}")


def scaled(hidden, scale: float) -> tuple[int, ...]:
    """Return the hidden widths times `scale`, rounded, each at least 1 (a net `scale` times as wide)."""
    check_number("scale", scale, 0, 100, low_open=True)
    return tuple(max(1, int(round(w * scale))) for w in hidden)


def point_limit(table, margin: float = 0.02, beat: float = 0.02, arms=("reinit", "random")) -> float:
    """Return the lowest density at which one config's ticket wins by the *point* rule over its seeds
    (means, no interval: the Q1 target, where a config has two seeds): the mean ticket accuracy within
    `margin` of the mean dense accuracy, and above each control's mean by more than `beat`. 1.0 (the
    dense net) when it wins at no round. `table` is chain_table() of one config."""
    check_number("margin", margin, 0, 1)
    check_number("beat", beat, -1, 1)
    _check_arms(arms)
    missing = sorted({"dense", "ticket", *arms} - set(table.arm)) if "arm" in getattr(table, "columns", ()) else ["arm"]
    if missing:
        raise ScidlError(f"table lacks {missing}: point_limit needs chain_table() rows of the dense run, the ticket "
                         f"and each of arms={list(arms)}")
    dense = table[table.arm == "dense"].test_acc.mean()
    best = 1.0
    for r, g in table[table["round"] > 0].groupby("round"):
        acc = g.groupby("arm").test_acc.mean()
        if acc["ticket"] >= dense - margin and all(acc["ticket"] - acc[a] > beat for a in arms):
            best = min(best, float(g[g.arm == "ticket"].density.mean()))
    return best
