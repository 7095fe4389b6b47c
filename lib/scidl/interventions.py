"""Ablations, activation patching and attribution patching over TransformerLens hook points.

A component is a hook name, optionally with an index and a position: "blocks.0.attn.hook_z:2" is
head 2 (the head axis of q/k/v/z/pattern hooks), "blocks.0.mlp.hook_post:17" is neuron 17 (last
axis), "blocks.0.mlp.hook_post:3,8,9" a group of neurons (a cluster), and "@2" restricts any of them
to one position, e.g. "hook_embed@0" (token a) or "blocks.0.attn.hook_z:1@2" (head 1 at '=').
Every function returns a tidy DataFrame (component, effect).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from scidl.models import check_hook_names
from scidl.train import cross_entropy
from scidl.errors import ScidlError, check_frame, check_int, describe, not_allowed

ABLATIONS = ("zero", "mean", "resample")


class InterventionError(ScidlError):
    """A component, index, position or batch that the model or the intervention does not allow."""


def patching_agreement(exact: pd.DataFrame, approx: pd.DataFrame, k: int = 5) -> dict[str, float]:
    """Return the Spearman rank correlation of two patching tables' effects and the overlap of
    their top-k components by |effect| (fraction of k)."""
    from scipy.stats import spearmanr

    for name, table in (("exact", exact), ("approx", approx)):
        check_frame(name, table, ("component", "effect"), InterventionError)
        if table.component.duplicated().any() or not np.isfinite(table.effect.to_numpy(dtype=float)).all():
            raise InterventionError(not_allowed(name, "a table with repeated components or non-finite effects",
                                                "one finite effect per component"))
    k = _int("k", k, 1)
    both = exact[["component", "effect"]].merge(approx[["component", "effect"]], on="component")
    if len(both) < 3 or not 1 <= k <= len(both):
        raise InterventionError(f"k={k} with {len(both)} shared components is not allowed: need >= 3 "
                                f"components and 1 <= k <= their number")
    constant = both.effect_x.nunique() < 2 or both.effect_y.nunique() < 2
    rho = math.nan if constant else float(spearmanr(both.effect_x, both.effect_y).statistic)
    if not math.isfinite(rho):
        raise InterventionError("effects that are constant are not allowed: the rank correlation is undefined")
    top = lambda col: set(both.loc[both[col].abs().nlargest(k).index, "component"])
    return {"spearman": rho, "topk_overlap": len(top("effect_x") & top("effect_y")) / k}


def default_components(model) -> list[str]:
    """Return the components to rank for `model`: embeddings, then per layer each head, the attention
    output and the MLP output (for an MLP: its pre- and post-activations)."""
    if model.cfg.arch == "mlp":
        return ["hook_pre", "hook_post"]
    out = ["hook_embed"]
    for layer in range(model.cfg.n_layers):
        out += [f"blocks.{layer}.attn.hook_z:{h}" for h in range(model.cfg.n_heads)]
        out += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
    return out


HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z")


def parse_component(component: str) -> tuple[str, int | list[int] | None, int | None]:
    """Return (hook name, index or list of indices or None, position or None) of a component."""
    rest, _, pos = component.partition("@")
    hook, _, index = rest.partition(":")
    try:
        idx = [int(i) for i in index.split(",")] if index else None
        position = int(pos) if pos else None
    except ValueError:
        raise InterventionError(f"component={component!r} is not allowed: use 'hook', 'hook:i', "
                                f"'hook:i,j,k', optionally with '@pos'") from None
    return hook, (idx if idx is None or len(idx) > 1 else idx[0]), position


def _slot(hook: str, act: Tensor, index: int | list[int] | None, pos: int | None = None) -> tuple:
    """Return the indexing tuple that selects the component inside the activation."""
    head_hook, pattern_hook = hook.endswith(HEAD_HOOKS), hook.endswith(("hook_pattern", "hook_attn_scores"))
    axis = 2 if head_hook else 1 if pattern_hook else act.dim() - 1  # the axis `index` selects
    indices = [] if index is None else [index] if isinstance(index, int) else index
    if any(not -act.shape[axis] <= i < act.shape[axis] for i in indices):
        raise InterventionError(f"index={index!r} of {hook} is not allowed: that axis has {act.shape[axis]} entries")
    pos_axis = 2 if pattern_hook else 1
    if pos is not None and (act.dim() < 3 or not -act.shape[pos_axis] <= pos < act.shape[pos_axis]):
        raise InterventionError(f"position={pos!r} of {hook} is not allowed: activation shape {tuple(act.shape)}")
    idx, p = (slice(None) if index is None else index), (slice(None) if pos is None else pos)
    if head_hook:  # (batch, pos, head, d_head)
        return (slice(None), p, idx, slice(None))
    if pattern_hook:  # (batch, head, query pos, key pos)
        return (slice(None), idx, p)
    return (..., idx) if pos is None else (slice(None), p, idx)  # (batch, [pos,] features)


def ablation_hook(component: str, how: str, seed: int = 0) -> tuple[str, Callable]:
    """Return a (hook name, fn) pair replacing the component by zero, its batch mean or a resample."""
    if how not in ABLATIONS:
        raise InterventionError(f"how={how!r} is not allowed: must be one of {list(ABLATIONS)}")
    seed = _int("seed", seed, 0)
    name, index, pos = parse_component(component)

    def fn(act: Tensor, hook) -> Tensor:
        act = act.clone()
        s = _slot(name, act, index, pos)
        if how == "zero":
            act[s] = 0
        elif how == "mean":
            act[s] = act[s].mean(dim=0, keepdim=True).expand_as(act[s])
        else:
            perm = torch.randperm(act.shape[0], generator=torch.Generator().manual_seed(seed))
            act[s] = act[perm][s]
        return act
    return name, fn


def _check_gap(m_clean: float, m_corrupt: float) -> None:
    """Raise InterventionError when the effect normalisation (m_clean - m_corrupt) is undefined."""
    if not (math.isfinite(m_clean) and math.isfinite(m_corrupt)) or m_clean == m_corrupt:
        raise InterventionError(f"metric with clean={m_clean!r} and corrupt={m_corrupt!r} is not allowed: "
                                f"patching effects are normalised by their difference, which must be "
                                f"finite and non-zero (is the corruption changing the answer?)")


def _metric_value(metric: Any, logits: Tensor) -> float:
    """Return metric(logits) as a float; InterventionError unless it is a callable giving one number."""
    if not callable(metric):
        raise InterventionError(not_allowed("metric", metric, "must be a function logits -> scalar tensor"))
    out = metric(logits)
    if not isinstance(out, Tensor) or out.numel() != 1:
        raise InterventionError(not_allowed("metric", metric, f"must return a scalar tensor, not "
                                            f"{describe(out)}"))
    return out


def _int(name: str, value: Any, low: int) -> int:
    return check_int(name, value, low, error=InterventionError)


def _check_pair(model, clean: Tensor, corrupt: Tensor, components: Any) -> list[str]:
    """Check a patching pair and its components; return the components as a list."""
    check_batch(model, clean)
    check_batch(model, corrupt)
    components = _check_components(components)
    check_hook_names(model, [parse_component(c)[0] for c in components])
    if clean.shape != corrupt.shape:
        raise InterventionError(f"corrupt of shape {tuple(corrupt.shape)} is not allowed: patching pairs "
                                f"each clean input with one corrupt input, so it must match clean's {tuple(clean.shape)}")
    return components


def check_batch(model, tokens: Any, labels: Any = None) -> None:
    """Raise InterventionError unless `tokens` is an integer (batch, n_ctx) tensor of the model's
    tokens (values in [0, d_vocab)) and `labels` (if given) an integer tensor of the answers' shape,
    (batch,) or (batch, n_answers), with values in [0, d_vocab_out)."""
    if not hasattr(model, "d_vocab"):  # a model without a token vocabulary: only the batch's form is checked
        if not isinstance(tokens, Tensor) or tokens.dim() == 0 or len(tokens) == 0:
            raise InterventionError(f"inputs={describe(tokens)} is not allowed: must be a non-empty tensor")
        return
    n_ctx, vocab, note = model.n_ctx, model.d_vocab, model.token_note
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32) \
            or tokens.dim() != 2 or tokens.shape[1] != n_ctx or len(tokens) == 0:
        raise InterventionError(f"tokens={describe(tokens)} is not allowed: must be a non-empty integer "
                                f"tensor of shape (batch, {n_ctx})")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise InterventionError(f"tokens with values in [{int(tokens.min())}, {int(tokens.max())}] are not "
                                f"allowed: the model's tokens are 0..{vocab - 1}{note}")
    if labels is None:
        return
    n_answers = getattr(model, "n_answers", 1)
    shape = tuple(tokens.shape[:1]) + ((n_answers,) if n_answers > 1 else ())
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32) \
            or tuple(labels.shape) != shape:
        raise InterventionError(f"labels={describe(labels)} is not allowed: must be an integer tensor of "
                                f"shape {shape}, the answer(s) of each row of tokens")
    if int(labels.min()) < 0 or int(labels.max()) >= model.d_vocab_out:
        raise InterventionError(f"labels with values in [{int(labels.min())}, {int(labels.max())}] are not "
                                f"allowed: answers are 0..{model.d_vocab_out - 1}")


def _check_components(components: Any) -> list[str]:
    if isinstance(components, str) or not hasattr(components, "__iter__"):
        raise InterventionError(f"components={components!r} is not allowed: must be a list of component "
                                f"strings such as ['blocks.0.attn.hook_z:1@2']")
    components = list(components)
    for c in components:
        if not isinstance(c, str):
            raise InterventionError(f"components entry {c!r} is not allowed: must be a string")
    return components


def loss(model, tokens: Tensor, labels: Tensor, fwd_hooks=()) -> float:
    """Return the cross-entropy (float64 log-softmax) of `model`'s answer logits, averaged over rows
    and answer positions, with optional hooks."""
    check_batch(model, tokens, labels)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
    if hasattr(model, "answer_logits"):
        logits = model.answer_logits(logits)
    elif logits.dim() == 3:  # any other hooked model: the answer is at the last position
        logits = logits[:, -1]
    return float(cross_entropy(logits, labels))


def ablate(model, tokens: Tensor, labels: Tensor, components: list[str], how: str = "mean",
           seed: int = 0) -> pd.DataFrame:
    """Return, per component, the loss after ablating it and the increase over the clean loss."""
    components = _check_components(components)
    check_hook_names(model, [parse_component(c)[0] for c in components])
    clean = loss(model, tokens, labels)
    rows = [{"component": c, "ablation": how,
             "loss": (ablated := loss(model, tokens, labels, [ablation_hook(c, how, seed)])),
             "effect": ablated - clean} for c in components]
    return pd.DataFrame(rows)


def activation_patching(model, clean: Tensor, corrupt: Tensor, components: list[str],
                        metric: Callable[[Tensor], Tensor]) -> pd.DataFrame:
    """Return, per component, the metric when its clean activation is patched into the corrupt run,
    normalised so 0 = corrupt baseline and 1 = clean performance."""
    components = _check_pair(model, clean, corrupt, components)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        m_clean, m_corrupt = float(_metric_value(metric, model(clean))), float(_metric_value(metric, model(corrupt)))
    _check_gap(m_clean, m_corrupt)
    return patched_effects(model, corrupt, components, metric, cache, m_clean, m_corrupt)


def patched_effects(model, corrupt: Tensor, components: list[str], metric: Callable[[Tensor], Tensor], cache: Any,
                    m_clean: float, m_corrupt: float) -> pd.DataFrame:
    """Return activation patching's table given the clean cache and both metrics already computed:
    one corrupt forward per component, with that component's clean activation patched in."""
    rows = []
    for component in components:
        name, index, pos = parse_component(component)

        def patch(act, hook, name=name, index=index, pos=pos):
            act = act.clone()
            s = _slot(name, act, index, pos)
            act[s] = cache[name][s]
            return act
        with torch.no_grad():
            m = float(_metric_value(metric, model.run_with_hooks(corrupt, fwd_hooks=[(name, patch)])))
        rows.append({"component": component, "metric": m,
                     "effect": (m - m_corrupt) / (m_clean - m_corrupt)})
    return pd.DataFrame(rows, columns=["component", "metric", "effect"])


def attribution_patching(model, clean: Tensor, corrupt: Tensor, components: list[str],
                         metric: Callable[[Tensor], Tensor]) -> pd.DataFrame:
    """Return the linear estimate (clean − corrupt activation) · grad(metric) per component, from one
    clean forward and one corrupt forward + backward, normalised like activation_patching."""
    return attribution(model, clean, corrupt, components, metric)[0]


def attribution(model, clean: Tensor, corrupt: Tensor, components: list[str], metric: Callable[[Tensor], Tensor]
                ) -> tuple[pd.DataFrame, Any, float, float]:
    """Return attribution_patching's table and what it computed on the way: the clean cache of the
    components' hooks, and the clean and corrupt metric (2 forward passes and 1 backward in all)."""
    components = _check_pair(model, clean, corrupt, components)
    names = sorted({parse_component(c)[0] for c in components})
    with torch.no_grad():
        logits, clean_cache = model.run_with_cache(clean, names_filter=names)
        m_clean = float(_metric_value(metric, logits))
    acts: dict[str, Tensor] = {}

    def keep(act, hook):
        if not act.requires_grad:  # no parameter upstream: make the activation a leaf
            act = act.detach().requires_grad_(True)
        act.retain_grad()
        acts[hook.name] = act
        return act
    with torch.enable_grad():
        out = _metric_value(metric, model.run_with_hooks(corrupt, fwd_hooks=[(n, keep) for n in names]))
        if not out.requires_grad:
            raise InterventionError(not_allowed("metric", metric, "must be differentiable in the logits "
                                                "(attribution patching takes its gradient)"))
        out.backward()
    m_corrupt = out.item()
    _check_gap(m_clean, m_corrupt)
    rows = []
    for component in components:
        name, index, pos = parse_component(component)
        s = _slot(name, acts[name], index, pos)
        delta = (clean_cache[name][s] - acts[name].detach()[s]) * acts[name].grad[s]
        rows.append({"component": component, "effect": float(delta.sum()) / (m_clean - m_corrupt)})
    model.zero_grad(set_to_none=True)
    return pd.DataFrame(rows), clean_cache, m_clean, m_corrupt
