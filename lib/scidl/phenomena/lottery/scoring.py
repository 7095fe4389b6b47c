"""The lottery ticket's yardstick pieces (the scorecard's rows; the protocol is scidl.yardsticks').

Q2, before retraining: `rewind_features(cfg, store)` reads only what exists at the rewind point (the
parents' weights and the mask they give, through scidl.masks.resolve; the ticket itself need not be
trained): its density and how much of the dense run's final weight energy the mask keeps, per layer.

Q3, which layer's mask matters most: the truth is retraining (`imp.layer_controls`: the ticket with one
layer's mask replaced by a random one of the same density; `layer_truth` gives the accuracy each
loses). The methods get the rewound weights (unmasked) and the mask, and are counted from hand-over
(scidl.yardsticks.protocol): `snip` (one forward and one backward on a training batch: the saliency
|g . w| the mask keeps in each layer beyond what a random mask of its density keeps), `magnitude`
(no pass: the dense run's final-weight energy the mask keeps beyond a random mask's), `sparsest`
(no pass: the structural guess, the layer the mask prunes most, ties in a seeded random order) and
`random_order`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from scidl import masks
from scidl.config import RunConfig
from scidl.errors import ScidlError, check_int, check_type
from scidl.registry import make_model


def _dense_final(cfg: RunConfig, store) -> dict[str, torch.Tensor]:
    """Return the final weights of the dense run at the root of `cfg`'s chain (init_from, else mask_from)."""
    key = cfg.train.init_from or cfg.train.mask_from
    run = store.load(key)
    while run.config.train.mask_from:  # a parent that is itself a ticket: walk up to the dense run
        run = store.load(run.config.train.init_from or run.config.train.mask_from)
    return run.load_state()


def rewind_features(cfg: RunConfig, store) -> dict:
    """Return a ticket's features at the rewind point, before it is retrained: `density` (of its mask),
    per layer the share of the dense run's final weight energy the mask keeps (`kept_<name>`), and their
    minimum and mean (`kept_min`, `kept_mean`). Reads the parents only (masks.resolve)."""
    check_type("cfg", cfg, RunConfig, "a ticket's RunConfig")
    if not cfg.train.mask_from:
        raise ScidlError(f"cfg={cfg.hash} is not allowed: it has no mask (mask_from is empty); give a ticket round")
    model = make_model(cfg.model, cfg.task, seed=cfg.train.seed)
    _, mask = masks.resolve(cfg, store, model)
    final = _dense_final(cfg, store)
    kept = {n: float(((final[n] * m) ** 2).sum() / (final[n] ** 2).sum().clamp_min(1e-30)) for n, m in mask.items()}
    return {"density": masks.density(mask)["total"], "kept_min": min(kept.values()),
            "kept_mean": float(np.mean(list(kept.values()))), **{f"kept_{n}": v for n, v in kept.items()}}


def rewound(cfg: RunConfig, store) -> tuple[torch.nn.Module, masks.Mask]:
    """Return (the model at the rewind point with every weight, pruned ones included, and the mask)."""
    check_type("cfg", cfg, RunConfig, "a ticket's RunConfig")
    if not cfg.train.mask_from:
        raise ScidlError(f"cfg={cfg.hash} is not allowed: it has no mask (mask_from is empty); give a ticket round")
    model = make_model(cfg.model, cfg.task, seed=cfg.train.seed if cfg.train.init_seed < 0 else cfg.train.init_seed)
    init, mask = masks.resolve(cfg, store, model)
    if init is not None:
        model.load_state_dict(init)
    return model, mask


def layer_truth(ticket_run, controls: dict) -> pd.DataFrame:
    """Return one row per layer: `effect`, the ticket's final test accuracy minus that of the ticket
    retrained with the layer's mask replaced by a random one (`controls`: {name: stored Run}, from
    imp.layer_controls), largest first."""
    base = ticket_run.summary["final_test_acc"]
    rows = [{"component": n, "effect": base - r.summary["final_test_acc"]} for n, r in controls.items()]
    return pd.DataFrame(rows).sort_values("effect", ascending=False, kind="stable").reset_index(drop=True)


def _ranked(scores: dict[str, float]) -> pd.DataFrame:
    frame = pd.DataFrame({"component": list(scores), "score": [float(v) for v in scores.values()]})
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def snip(model, mask: masks.Mask, x: torch.Tensor, y: torch.Tensor) -> pd.DataFrame:
    """One forward and one backward on (x, y) with the masked weights: per layer, the connection
    saliency |dL/dw_eff . w| (Lee et al. 2019's SNIP, on every connection, pruned ones included) summed
    over the kept connections, minus the layer's density times its sum over all (a random mask's
    expectation), as a share of the layer's total."""
    params = dict(masks.prunable(model))
    originals = {n: params[n].detach().clone() for n in mask}
    with torch.no_grad():
        for n, m in mask.items():
            params[n].mul_(m.to(params[n].dtype))
    for n in mask:
        params[n].requires_grad_(True)  # the gradient on every connection: dL/dw_eff, pruned ones included
    loss = torch.nn.functional.cross_entropy(model(x).double(), y)
    grads = torch.autograd.grad(loss, [params[n] for n in mask])
    scores = {}
    for (n, m), g in zip(mask.items(), grads):
        sal = (g * originals[n]).abs().double()
        total = float(sal.sum()) or 1e-30
        scores[n] = (float(sal[m].sum()) - float(m.float().mean()) * total) / total
    return _ranked(scores)


def magnitude(final: dict[str, torch.Tensor], mask: masks.Mask) -> pd.DataFrame:
    """No pass: per layer, the share of the dense run's final weight energy the mask keeps minus the
    layer's density (what a random mask keeps in expectation)."""
    scores = {}
    for n, m in mask.items():
        energy = (final[n].double() ** 2)
        scores[n] = float(energy[m].sum() / energy.sum().clamp_min(1e-30)) - float(m.float().mean())
    return _ranked(scores)


def sparsest(mask: masks.Mask, seed: int = 0) -> pd.DataFrame:
    """No pass: the structural guess, layers by how much the mask prunes them; layers pruned alike (a
    layer-wise schedule prunes the hidden layers to the same density) in a random order (seeded), so
    a tie is not resolved by where a layer happens to sit."""
    seed = check_int("seed", seed, 0)
    names = list(mask)
    jitter = np.random.default_rng(seed).permutation(len(names))
    order = sorted(range(len(names)), key=lambda i: (-round(1 - float(mask[names[i]].float().mean()), 9), jitter[i]))
    return _ranked({names[i]: float(len(names) - k) for k, i in enumerate(order)})


def random_order(mask: masks.Mask, seed: int) -> pd.DataFrame:
    """No pass: the layers in a random order (seeded)."""
    seed = check_int("seed", seed, 0)
    order = np.random.default_rng(seed).permutation(len(mask))
    names = list(mask)
    return _ranked({names[i]: float(len(mask) - k) for k, i in enumerate(order)})
