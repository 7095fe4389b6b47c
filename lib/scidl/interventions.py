"""Ablations, activation patching and attribution patching over TransformerLens hook points.

A component is a hook name, optionally with an index: "blocks.0.attn.hook_z:2" is head 2
(the head axis of q/k/v/z/pattern hooks), "blocks.0.mlp.hook_post:17" is neuron 17 (last axis).
Every function returns a tidy DataFrame (component, effect).
"""
from __future__ import annotations

import copy
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from scidl import fourier
from scidl.models import embedding_matrix

ABLATIONS = ("zero", "mean", "resample")

def default_components(model) -> list[str]:
    """Return the components to rank for `model`: embeddings, heads, attention and MLP outputs."""
    if model.cfg.arch == "mlp":
        return ["hook_pre", "hook_post"]
    heads = [f"blocks.0.attn.hook_z:{h}" for h in range(model.cfg.n_heads)]
    return ["hook_embed", *heads, "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out"]


HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z")


def parse_component(component: str) -> tuple[str, int | list[int] | None]:
    """Return (hook name, index, list of indices or None) of "hook", "hook:3" or "hook:3,8,9"."""
    hook, _, index = component.partition(":")
    if not index:
        return hook, None
    idx = [int(i) for i in index.split(",")]
    return hook, (idx[0] if len(idx) == 1 else idx)


def _slot(hook: str, act: Tensor, index: int | list[int] | None) -> tuple:
    """Return the indexing tuple that selects the component inside the activation."""
    if index is None:
        return (...,)
    if hook.endswith(HEAD_HOOKS):
        return (..., index, slice(None))
    if hook.endswith("hook_pattern"):
        return (slice(None), index)
    return (..., index)


def ablation_hook(component: str, how: str, seed: int = 0) -> tuple[str, Callable]:
    """Return a (hook name, fn) pair replacing the component by zero, its batch mean or a resample."""
    if how not in ABLATIONS:
        raise ValueError(f"how={how!r} is not allowed: must be one of {list(ABLATIONS)}")
    name, index = parse_component(component)

    def fn(act: Tensor, hook) -> Tensor:
        act = act.clone()
        s = _slot(name, act, index)
        if how == "zero":
            act[s] = 0
        elif how == "mean":
            act[s] = act[s].mean(dim=0, keepdim=True).expand_as(act[s])
        else:
            perm = torch.randperm(act.shape[0], generator=torch.Generator().manual_seed(seed))
            act[s] = act[perm][s]
        return act
    return name, fn


def loss(model, tokens: Tensor, labels: Tensor, fwd_hooks=()) -> float:
    """Return the last-position cross-entropy of `model` with optional hooks."""
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
    logits = logits[:, -1] if logits.dim() == 3 else logits
    return float(F.cross_entropy(logits, labels))


def ablate(model, tokens: Tensor, labels: Tensor, components: list[str], how: str = "mean",
           seed: int = 0) -> pd.DataFrame:
    """Return, per component, the loss after ablating it and the increase over the clean loss."""
    clean = loss(model, tokens, labels)
    rows = [{"component": c, "ablation": how,
             "loss": (ablated := loss(model, tokens, labels, [ablation_hook(c, how, seed)])),
             "effect": ablated - clean} for c in components]
    return pd.DataFrame(rows)


def with_embedding_freqs(model, freqs: list[int], keep: bool):
    """Return a copy of `model` whose input embedding keeps only (or loses) frequencies `freqs`."""
    out = copy.deepcopy(model)
    W = embedding_matrix(out)
    with torch.no_grad():
        W.copy_(fourier.project_freqs(W.detach(), freqs, dim=0, keep=keep))
        if out.cfg.arch == "mlp":  # the MLP embeds b separately
            Wb = out.W_in[out.p:]
            Wb.copy_(fourier.project_freqs(Wb.detach(), freqs, dim=0, keep=keep))
    return out


def ablate_freqs(model, tokens: Tensor, labels: Tensor, freqs: list[int]) -> pd.DataFrame:
    """Return losses with the embedding restricted to `freqs` (keep) and with them removed."""
    rows = [{"component": f"embed freqs {freqs}", "ablation": name,
             "loss": loss(with_embedding_freqs(model, freqs, keep), tokens, labels)}
            for name, keep in (("keep only", True), ("remove", False))]
    clean = loss(model, tokens, labels)
    return pd.DataFrame(rows).assign(effect=lambda d: d.loss - clean)


def activation_patching(model, clean: Tensor, corrupt: Tensor, components: list[str],
                        metric: Callable[[Tensor], Tensor]) -> pd.DataFrame:
    """Return, per component, the metric when its clean activation is patched into the corrupt run,
    normalised so 0 = corrupt baseline and 1 = clean performance."""
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        m_clean, m_corrupt = float(metric(model(clean))), float(metric(model(corrupt)))
    rows = []
    for component in components:
        name, index = parse_component(component)

        def patch(act, hook, name=name, index=index):
            act = act.clone()
            s = _slot(name, act, index)
            act[s] = cache[name][s]
            return act
        with torch.no_grad():
            m = float(metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, patch)])))
        rows.append({"component": component, "metric": m,
                     "effect": (m - m_corrupt) / (m_clean - m_corrupt)})
    return pd.DataFrame(rows)


def attribution_patching(model, clean: Tensor, corrupt: Tensor, components: list[str],
                         metric: Callable[[Tensor], Tensor]) -> pd.DataFrame:
    """Return the linear estimate (clean − corrupt activation) · grad(metric) per component, from one
    clean forward and one corrupt forward + backward, normalised like activation_patching."""
    names = sorted({parse_component(c)[0] for c in components})
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=names)
        m_clean = float(metric(model(clean)))
    acts: dict[str, Tensor] = {}

    def keep(act, hook):
        if not act.requires_grad:  # no parameter upstream: make the activation a leaf
            act = act.detach().requires_grad_(True)
        act.retain_grad()
        acts[hook.name] = act
        return act
    with torch.enable_grad():
        out = metric(model.run_with_hooks(corrupt, fwd_hooks=[(n, keep) for n in names]))
        out.backward()
    m_corrupt = out.item()
    rows = []
    for component in components:
        name, index = parse_component(component)
        s = _slot(name, acts[name], index)
        delta = (clean_cache[name][s] - acts[name].detach()[s]) * acts[name].grad[s]
        rows.append({"component": component, "effect": float(delta.sum()) / (m_clean - m_corrupt)})
    model.zero_grad(set_to_none=True)
    return pd.DataFrame(rows)
