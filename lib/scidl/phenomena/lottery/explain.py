"""The lottery ticket's explanation of one model (`scidl.explain(run)` on a ticket round): its first
layer reads *local windows* of the signal, and those windows carry what the net computes.

The mechanism: each first-layer unit keeps, of its surviving inputs, only those inside a window of
`window` positions (in the signal's original order: a net shown permuted inputs is read through the
permutation) centred on the magnitude-weighted centre of its surviving inputs; its other surviving
inputs are mean-ablated (their weights times the training mean of the input, folded into the bias)
and the rest of the net is as trained. Faithfulness (scidl.explain) is that
restricted net's test loss against the full net's and chance (log 10). The control: for every unit,
as many of its surviving inputs as its window keeps, chosen at random among them, `n_random` times.
The oracle keeps as many of each unit's largest weights instead.

`check_claims(run, explanation)` checks, each as an intervention or measurement with a predicted
outcome: the faithfulness claim (the windows beat every random same-size reading by 0.2) and locality
beyond which inputs survive (the spread of each unit's inputs against the same mask with every
column shuffled across units, ratio above 1.05). No check on a random mask: its ratio is 1 by
construction (shuffling a uniformly random mask's columns leaves its distribution unchanged), so it
could fail only by noise and would say nothing.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from scidl import masks
from scidl.errors import ScidlError, check_int
from scidl.explain import Explanation, faithfulness
from scidl.phenomena.lottery import imp
from scidl.phenomena.lottery.task import make_dataset

LOCAL_RATIO = 1.05  # a mask is local when its spread is below the column null's by this factor
BEATS_RANDOM = 0.2  # scidl.explain's margin


def _first_layer(model) -> str:
    return masks.prunable(model)[0][0]


def _windows(weight: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, window: int) -> torch.Tensor:
    """Return the bool (units x inputs) that keeps each unit's surviving inputs within `window`
    positions of its magnitude-weighted centre."""
    w = (weight.abs().double() * mask).clamp_min(0)
    mass = w.sum(1, keepdim=True).clamp_min(1e-30)
    centre = (w * pos.double()).sum(1, keepdim=True) / mass
    return mask & ((pos.double()[None, :] - centre).abs() <= window / 2)


def _restricted_loss(model, name: str, mask: torch.Tensor, keep: torch.Tensor, mean_x: torch.Tensor, x, y) -> float:
    """Return the test loss with each unit of layer `name` reading only its `keep` inputs: the other
    surviving inputs mean-ablated (their weights times the training mean of the input, folded into
    the bias), the rest of the net as trained."""
    params = dict(model.named_parameters())
    weight, bias = params[name], params[name.rsplit(".", 1)[0] + ".bias"]
    saved_w, saved_b = weight.detach().clone(), bias.detach().clone()
    with torch.no_grad():
        dropped = saved_w * (mask & ~keep).to(saved_w.dtype)
        bias.add_(dropped @ mean_x.to(saved_w.dtype))
        weight.mul_(keep.to(saved_w.dtype))
        loss = float(torch.nn.functional.cross_entropy(model(x).double(), y))
        weight.copy_(saved_w)
        bias.copy_(saved_b)
    return loss


def explain(run, window: int = 0, n_random: int = 20, seed: int = 0) -> Explanation:
    """Return the explanation of a ticket run's final model (see the module docstring); `window` 0 is a
    quarter of the input length."""
    mask_all = run.mask
    if mask_all is None:
        raise ScidlError(f"run {run.hash} is not allowed: it is dense (no mask); the lottery explanation reads a "
                         "ticket's first-layer mask (give a ticket round, imp.imp_configs)")
    model, data = run.load_model(), make_dataset(run.config.task)
    name = _first_layer(model)
    mask, weight = mask_all[name], dict(model.named_parameters())[name].detach()
    if mask.dim() != 2:
        raise ScidlError(f"run {run.hash} is not allowed: its first layer {name} is not a (units x inputs) weight")
    n_in = mask.shape[1]
    window = check_int("window", window or max(n_in // 4, 1), 1, n_in)
    n_random = check_int("n_random", n_random, 1)
    seed = check_int("seed", seed, 0)
    pos = data.permutation  # column j is the signal's position permutation[j]
    x, y = data.test
    mean_x = data.train[0].mean(0)
    with torch.no_grad():
        full = float(torch.nn.functional.cross_entropy(model(x).double(), y))
    chance = math.log(10)

    keep = _windows(weight, mask, pos, window)
    loss = _restricted_loss(model, name, mask, keep, mean_x, x, y)
    score = faithfulness(loss, full, chance)
    counts = keep.sum(1)
    gen = torch.Generator().manual_seed(seed)
    randoms = []
    for _ in range(n_random):
        rnd = torch.zeros_like(mask)
        for i in range(mask.shape[0]):
            alive = torch.nonzero(mask[i]).flatten()
            rnd[i, alive[torch.randperm(len(alive), generator=gen)[:int(counts[i])]]] = True
        randoms.append(faithfulness(_restricted_loss(model, name, mask, rnd, mean_x, x, y), full, chance))
    oracle = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        k = int(counts[i])
        if k:
            oracle[i, torch.topk((weight[i].abs() * mask[i]).double(), k).indices] = True
    oracle_score = faithfulness(_restricted_loss(model, name, mask, oracle, mean_x, x, y), full, chance)

    kept_share = float(keep.sum() / mask.sum().clamp_min(1))
    mass = (weight.abs() * mask).double()
    mass_share = float((mass * keep).sum() / mass.sum().clamp_min(1e-30))
    ratio = imp.locality_ratio(mask, pos)
    live = mask.sum(1) > 0
    claims = [f"{int(live.sum())} of {mask.shape[0]} first-layer units ({name}) keep inputs; within a window of "
              f"{window} of the {n_in} positions around each unit's centre lie {kept_share:.0%} of their surviving "
              f"inputs and {mass_share:.0%} of their weight mass",
              f"the fields are local beyond which inputs survive: column-null spread / observed spread {ratio:.2f} "
              f"(> {LOCAL_RATIO} is local)",
              "the windows alone, the rest of the net as trained, carry the net's computation (faithfulness "
              "by intervention, below)"]
    centres = ((mass * pos.double()).sum(1) / mass.sum(1).clamp_min(1e-30))
    order = torch.argsort(mass.sum(1), descending=True)[:8]
    parts = pd.DataFrame([{"component": f"{name}:{int(i)}", "role": f"reads positions {centres[i] - window / 2:.0f}-"
                                                                    f"{centres[i] + window / 2:.0f}",
                           "evidence": f"{int(mask[i].sum())} inputs kept, {float((mass[i] * keep[i]).sum() / mass[i].sum().clamp_min(1e-30)):.0%} "
                                       "of their mass in the window"} for i in order.tolist()])

    def figure():
        import matplotlib.pyplot as plt

        rows = torch.argsort(centres)[live[torch.argsort(centres)]]
        fig, ax = plt.subplots(figsize=(5, 3))
        plt.close(fig)
        shown = torch.zeros(mask.shape, dtype=torch.float64)
        shown[:, pos] = mass  # column j is the signal's position pos[j]: shown in the signal's order
        ax.imshow(shown[rows].numpy() > 0, aspect="auto", cmap="Greys", interpolation="nearest")
        ax.set(xlabel="signal position", ylabel="unit (by centre)", title=f"{name} mask of run {run.hash}")
        fig.tight_layout()
        return fig

    return Explanation(kind="lottery", run=run.hash, claims=claims, parts=parts,
                       faithfulness={"score": score, "random_scores": randoms, "loss": loss, "full_loss": full,
                                     "chance_loss": chance, "oracle_score": oracle_score,
                                     "oracle": "as many of each unit's largest surviving weights",
                                     "random_pool": "each unit's own surviving inputs, as many as its window keeps",
                                     "intervention": f"{name}: each unit's surviving inputs outside its window mean-ablated",
                                     "window": window, "locality_ratio": ratio},
                       figures=[figure], template="local receptive fields (Redman et al. 2024)")


def check_claims(run, explanation: Explanation) -> pd.DataFrame:
    """Return one row per claim (claim, predicted, observed, passed): faithfulness beats every random
    reading by 0.2, and the locality ratio is above 1.05."""
    f = explanation.faithfulness
    return pd.DataFrame([
        {"claim": "faithful: the windows beat every random same-size reading by 0.2",
         "predicted": f"> {explanation.random_score:.3f} + {BEATS_RANDOM}", "observed": f"{explanation.score:.3f}",
         "passed": bool(explanation.beats_random(BEATS_RANDOM))},
        {"claim": "local: column-null spread / observed spread", "predicted": f"> {LOCAL_RATIO}",
         "observed": f"{f['locality_ratio']:.3f}", "passed": bool(f["locality_ratio"] > LOCAL_RATIO)}])
