"""Pruning masks and rewinding, for any phenomenon's model (iterative magnitude pruning, Frankle &
Carbin 2019; rewinding, Frankle et al. 2020; the controls of Frankle et al. 2021).

A run whose TrainConfig names `init_from` starts from that run's checkpoint at `init_step` (a rewind
point), and one that names `mask_from` trains under a mask: that run's *final* weights (and its own
mask, if it had one) pruned by magnitude. The prunable weights are a model's parameters with two or
more dimensions, in `named_parameters()` order (biases and other vectors are never pruned); the
output layer is the one a model names in its `output_weight` attribute (the transformers' `W_U`),
else the last of them. A mask is a {name: bool tensor} saved as `mask.safetensors` in the run
folder (covered by the manifest), so a chain of runs is resumable, hashable and sweepable like any run.

Masking stays exact: masked weights are zeroed before the first forward, their gradients are zeroed
by a hook, and they are zeroed again after every optimizer step, so neither weight decay nor AdamW's
moments can revive one (`tests/test_masks.py` checks the sparsity after training).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from scidl.config import RunConfig
from scidl.errors import ScidlError, check_choice, check_int, check_number
from scidl.store import MASK_FILE
Mask = dict[str, torch.Tensor]


class MaskError(ScidlError):
    """A mask, a parent run or a rewind point that cannot be used; the message names it."""


def prunable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Return the prunable parameters of `model`: those with two or more dimensions, in order."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]


def dense_mask(model_or_state: Any) -> Mask:
    """Return the all-true mask of a model's (or state dict's) prunable weights."""
    items = prunable(model_or_state) if isinstance(model_or_state, torch.nn.Module) else \
        [(n, t) for n, t in model_or_state.items() if t.dim() >= 2]
    return {n: torch.ones(t.shape, dtype=torch.bool) for n, t in items}


def check_mask(mask: Any, state: dict[str, torch.Tensor], name: str = "mask") -> Mask:
    """Return `mask` if it is a bool tensor for exactly the prunable weights of `state`, each of its
    weight's shape; MaskError naming the first that is not."""
    want = {n: tuple(t.shape) for n, t in state.items() if t.dim() >= 2}
    if not isinstance(mask, dict) or set(mask) != set(want):
        raise MaskError(f"{name} with keys {sorted(mask)[:6] if isinstance(mask, dict) else type(mask).__name__} is "
                        f"not allowed: must cover exactly the prunable weights {sorted(want)[:6]}")
    for n, m in mask.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != want[n]:
            raise MaskError(f"{name}[{n!r}]={getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))} "
                            f"is not allowed: must be a bool tensor of shape {want[n]}")
    return mask


def output_weight(model: torch.nn.Module) -> str:
    """Return the name of `model`'s output layer weight: its `output_weight` attribute, else its last
    prunable weight."""
    names = [n for n, _ in prunable(model)]
    name = getattr(model, "output_weight", None) or (names[-1] if names else "")
    if name not in names:
        raise MaskError(f"output_weight={name!r} is not allowed: not a prunable weight of the model ({names[:6]})")
    return name


def magnitude_mask(state: dict[str, torch.Tensor], previous: Mask | None, rate: float, scope: str = "layer",
                   output_factor: float = 0.5, output: str | None = None) -> Mask:
    """Return the mask that prunes `rate` of the weights `previous` keeps, smallest |w| first.

    scope "layer": per prunable weight, round(rate x surviving) of them, the last (output) layer at
    `output_factor` x rate (the output layer: `output`, default the last prunable weight); "global":
    round(rate x all surviving) over every layer at once, the output layer included. Ties go to the
    lower flat index, so the mask is a function of the weights alone. (open_lth prunes ceil(rate x
    surviving) + ties and only globally; the half-rate output layer is Frankle & Carbin 2019's.)"""
    rate = check_number("prune_rate", rate, 0, 1, low_open=True, error=MaskError)
    if rate >= 1:
        raise MaskError(f"prune_rate={rate} is not allowed: must be below 1")
    check_choice("prune_scope", scope, ("layer", "global"), error=MaskError)
    output_factor = check_number("prune_output_factor", output_factor, 0, error=MaskError)
    names = [n for n, t in state.items() if t.dim() >= 2]
    if not names:
        raise MaskError("state with no weight of two or more dimensions is not allowed: nothing to prune")
    previous = check_mask(previous, state, "previous") if previous is not None else dense_mask(state)
    output = names[-1] if output is None else output
    if output not in names:
        raise MaskError(f"output={output!r} is not allowed: not a prunable weight ({names[:6]})")
    out: Mask = {}
    if scope == "layer":
        for n in names:
            r = rate * output_factor if n == output else rate
            out[n] = _prune(state[n].abs(), previous[n], r)
        return out
    flat = torch.cat([state[n].abs().flatten() for n in names])
    keep = torch.cat([previous[n].flatten() for n in names])
    pruned = _prune(flat, keep, rate)
    start = 0
    for n in names:
        k = state[n].numel()
        out[n] = pruned[start:start + k].reshape(state[n].shape)
        start += k
    return out


def _prune(magnitude: torch.Tensor, keep: torch.Tensor, rate: float) -> torch.Tensor:
    """Return `keep` with round(rate x keep.sum()) more entries off: the smallest magnitudes it keeps."""
    flat_keep = keep.flatten().clone()
    alive = torch.nonzero(flat_keep).squeeze(1)
    n_off = min(int(round(rate * len(alive))), len(alive))
    if n_off:
        values = magnitude.flatten()[alive].double()
        order = torch.argsort(values, stable=True)  # ties: the lower flat index goes first
        flat_keep[alive[order[:n_off]]] = False
    return flat_keep.reshape(keep.shape)


def control_mask(mask: Mask, control: str, seed: int, layers: tuple[str, ...] = ()) -> Mask:
    """Return a control of `mask` with the same per-layer sparsity: "random" keeps as many weights per
    layer at random positions; "shuffle" permutes the entries of each row (dim 0, the other dims
    flattened) of a weight: for an nn.Linear (out, in) weight each unit keeps its fan-in at random
    positions, for an nn.Conv1d (out, in, kernel) weight each output channel keeps its count over
    (in, kernel) (for other layouts, say (d_in, d_out), it is each row's count that is kept); "none"
    returns `mask`. `layers` (names of `mask`'s weights) limits the control to those weights, the
    others keeping `mask`; each named weight gets the same control it gets with `layers` empty (every
    weight), so a one-layer control is the all-layer control restricted to that layer."""
    check_choice("mask_control", control, ("none", "random", "shuffle"), error=MaskError)
    seed = check_int("seed", seed, 0, error=MaskError)
    unknown = [n for n in layers if n not in mask]
    if isinstance(layers, str) or unknown:
        raise MaskError(f"TrainConfig.mask_control_layers={layers!r} is not allowed: {unknown or layers} are not "
                        f"prunable weights of the model ({list(mask)})")
    if control == "none":
        return mask
    gen = torch.Generator().manual_seed(seed)
    out: Mask = {}
    for n, m in mask.items():
        if control == "random":
            flat = torch.zeros(m.numel(), dtype=torch.bool)
            flat[torch.randperm(m.numel(), generator=gen)[:int(m.sum())]] = True
            out[n] = flat.reshape(m.shape)
        else:
            rows = m.reshape(m.shape[0], -1)
            perm = torch.stack([torch.randperm(rows.shape[1], generator=gen) for _ in range(rows.shape[0])])
            out[n] = rows.gather(1, perm).reshape(m.shape)
    return {n: out[n] if not layers or n in layers else m for n, m in mask.items()}


def density(mask: Mask) -> dict[str, float]:
    """Return the share of weights kept per layer and over all of them (`"total"`)."""
    out = {n: float(m.float().mean()) for n, m in mask.items()}
    out["total"] = float(sum(int(m.sum()) for m in mask.values()) / max(sum(m.numel() for m in mask.values()), 1))
    return out


def model_density(model: torch.nn.Module) -> dict[str, float]:
    """Return the share of nonzero prunable weights of `model`, per layer and in total."""
    return density({n: p.detach() != 0 for n, p in prunable(model)})


def save_mask(folder: Path, mask: Mask) -> None:
    """Write `mask` as `mask.safetensors` in `folder` (uint8 tensors: safetensors' bool is not portable)."""
    save_file({n: m.to(torch.uint8).contiguous() for n, m in mask.items()}, str(Path(folder) / MASK_FILE))


def load_mask(folder: Path) -> Mask | None:
    """Return the mask saved in run folder `folder`, or None for a dense run."""
    path = Path(folder) / MASK_FILE
    if not path.exists():
        return None
    try:
        raw = load_file(str(path))
    except Exception as e:  # safetensors raises its own types for damaged files
        raise MaskError(f"{path}: cannot be read as safetensors ({type(e).__name__}); the mask is damaged") from None
    if any(t.dtype != torch.uint8 or bool((t > 1).any()) for t in raw.values()):
        raise MaskError(f"{path}: not a mask (uint8 tensors of 0 and 1); the run folder is damaged")
    return {n: t.bool() for n, t in raw.items()}


def resolve(cfg: RunConfig, store, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor] | None, Mask | None]:
    """Return (initial state or None, mask or None) for `cfg`: `init_from`'s checkpoint at `init_step`
    and `mask_from`'s final weights pruned as `cfg` says (then its control). Every parent must be a
    finished run in `store` whose weights fit `model`; MaskError names the field otherwise. Reads only."""
    t = cfg.train
    want = {n: tuple(v.shape) for n, v in model.state_dict().items()}
    init = mask = None
    if t.init_from:
        parent = _parent(store, "init_from", t.init_from, want)
        if t.init_step not in parent.checkpoint_steps:
            raise MaskError(f"TrainConfig.init_step={t.init_step} is not allowed: run {parent.hash} has checkpoints "
                            f"at {parent.checkpoint_steps[:8]}{'...' if len(parent.checkpoint_steps) > 8 else ''}")
        init = parent.load_state(t.init_step)
        parent_mask = load_mask(parent.path)
        if parent_mask is not None:  # a rewind point of a pruned run holds its zeros: keep them zero
            init = {n: v * parent_mask[n] if n in parent_mask else v for n, v in init.items()}
    if t.mask_from:
        parent = _parent(store, "mask_from", t.mask_from, want)
        state = parent.load_state()
        previous = load_mask(parent.path)
        if previous is not None:
            check_mask(previous, state, f"run {parent.hash}'s mask")
        mask = magnitude_mask(state, previous, t.prune_rate, t.prune_scope, t.prune_output_factor,
                              output_weight(model))
        mask = control_mask(mask, t.mask_control, t.seed, t.mask_control_layers)
    return init, mask


def _parent(store, field: str, key: str, want: dict[str, tuple[int, ...]]):
    from scidl.store import RunNotFound, StoreError

    try:
        parent = store.load(key)
    except RunNotFound:
        raise MaskError(f"TrainConfig.{field}={key!r} is not allowed: no finished run of that hash in {store.root} "
                        f"(train the parent first)") from None
    except StoreError as e:
        raise MaskError(f"TrainConfig.{field}={key!r} is not allowed: that run is damaged ({e})") from None
    state = parent.load_state(parent.checkpoint_steps[0])
    got = {n: tuple(v.shape) for n, v in state.items()}
    if got != want:
        raise MaskError(f"TrainConfig.{field}={key!r} is not allowed: its weights {sorted(got.items())[:3]} do not fit "
                        f"this run's model {sorted(want.items())[:3]}")
    return parent


class Masker:
    """Holds a model to a mask during training: zeroes the masked weights, zeroes their gradients (a
    hook) and, after every optimizer step (`after_step`), zeroes them again."""

    def __init__(self, model: torch.nn.Module, mask: Mask) -> None:
        params = dict(prunable(model))
        check_mask(mask, {n: p for n, p in params.items()})
        self.pairs = [(params[n], m.to(params[n].dtype)) for n, m in mask.items()]
        self.handles = [p.register_hook(lambda g, m=m: g * m) for p, m in self.pairs]
        self.after_step()

    @torch.no_grad()
    def after_step(self) -> None:
        for p, m in self.pairs:
            p.mul_(m)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def check_parents_exist(cfg: RunConfig, store) -> None:
    """Raise MaskError (naming the field) if a parent run `cfg` names is not finished in `store`."""
    for field in ("init_from", "mask_from"):
        key = getattr(cfg.train, field)
        if key and not (Path(store.root) / key / "summary.json").exists():
            raise MaskError(f"TrainConfig.{field}={key!r} is not allowed: no finished run of that hash in "
                            f"{store.root} (train the parent first)")


__all__ = ["MASK_FILE", "Mask", "MaskError", "Masker", "check_mask", "check_parents_exist", "control_mask",
           "dense_mask", "density", "load_mask", "magnitude_mask", "model_density", "prunable", "resolve",
           "save_mask"]
