"""Adversarial examples for any classifier: FGSM (Goodfellow et al. 2015) and PGD with a random start
(Madry et al. 2018) under L-inf and L2, untargeted or targeted, batched and deterministic under a seed.

A model is anything that maps a float batch `x` (batch, ...) to logits (batch, classes): a registered
phenomenon's classifier (lottery's MLP or CNN on MNIST-1D or digits) or any torch module. The attack
ascends the cross-entropy of the true label (untargeted) or descends that of `target` (targeted), in
float64 for the loss. Every step is projected back exactly: onto the eps-ball around the clean input
(L-inf: a clamp; L2: a rescale of the whole perturbation), then into `bounds` (the data's valid range;
None: unbounded), so every returned perturbation has norm <= eps and lies in range (a test checks each).

`robust_accuracy(model, x, y, attacks)` is the pointwise worst case over the attacks run: an input
counts as robust only if no attack fooled the model on it (never a mean over attacks).
The model is put in eval mode and its parameters get no gradient; it is restored afterwards.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from scidl.errors import ScidlError, check_choice, check_int, check_number

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class Attack:
    """One attack's settings: `norm` ("linf" or "l2"), `eps` (the ball's radius), `steps` (1 with
    `step_size` = eps and no random start is FGSM for L-inf; the fast gradient method for L2), `step_size`
    (0: 2.5 eps / steps, Madry et al.'s choice), `random_start` (a uniform start in the ball), `targeted`
    and `seed` (the random start's generator). Validated on construction."""

    norm: str = "linf"
    eps: float = 0.1
    steps: int = 10
    step_size: float = 0.0
    random_start: bool = True
    targeted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("norm", self.norm, NORMS)
        check_number("eps", self.eps, 0)
        check_int("steps", self.steps, 1, 100_000)
        check_number("step_size", self.step_size, 0)
        for name in ("random_start", "targeted"):
            if not isinstance(getattr(self, name), bool):
                raise ScidlError(f"{name}={getattr(self, name)!r} is not allowed: must be True or False")
        check_int("seed", self.seed, 0)

    @property
    def alpha(self) -> float:
        return self.step_size or 2.5 * self.eps / self.steps

    @property
    def name(self) -> str:
        kind = "FGSM" if self.steps == 1 and not self.random_start else f"PGD-{self.steps}"
        return f"{kind} {self.norm} eps={self.eps:g}" + (" targeted" if self.targeted else "")


def fgsm(eps: float, norm: str = "linf", targeted: bool = False) -> Attack:
    """Return the fast gradient (sign) method: one step of size eps from the clean input."""
    return Attack(norm=norm, eps=eps, steps=1, step_size=eps, random_start=False, targeted=targeted)


def pgd(eps: float, steps: int = 10, norm: str = "linf", step_size: float = 0.0, random_start: bool = True,
        targeted: bool = False, seed: int = 0) -> Attack:
    """Return projected gradient descent (Madry et al. 2018)."""
    return Attack(norm=norm, eps=eps, steps=steps, step_size=step_size, random_start=random_start,
                  targeted=targeted, seed=seed)


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Return `delta` projected onto the eps-ball of `norm` (per row)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = _flat_norm(delta)
    return delta * torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))


def _check_batch(model, x, y, bounds, target):
    if not callable(model):
        raise ScidlError(f"model={model!r:.80} is not allowed: must map a batch to logits")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ScidlError(f"x={getattr(x, 'shape', x)!r:.80} is not allowed: must be a float tensor (batch, ...)")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise ScidlError(f"y={getattr(y, 'shape', y)!r:.80} is not allowed: must be int64 labels, one per row of x")
    if target is not None and (not isinstance(target, Tensor) or target.dtype != torch.int64 or target.shape != y.shape):
        raise ScidlError(f"target={getattr(target, 'shape', target)!r:.80} is not allowed: must be int64 labels like y")
    if bounds is not None:
        if not (isinstance(bounds, tuple) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
                and bounds[0] < bounds[1]):
            raise ScidlError(f"bounds={bounds!r} is not allowed: must be (low, high) with low < high, or None")
        if bool((x < bounds[0]).any() or (x > bounds[1]).any()):
            raise ScidlError(f"x is not allowed: it lies outside bounds={bounds} (min {float(x.min()):.4g}, max "
                             f"{float(x.max()):.4g})")


@contextlib.contextmanager
def _frozen(model):
    params = [p for p in getattr(model, "parameters", lambda: [])()]
    was = [p.requires_grad for p in params]
    training = getattr(model, "training", False)
    try:
        for p in params:
            p.requires_grad_(False)
        if hasattr(model, "eval"):
            model.eval()
        yield
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)
        if training and hasattr(model, "train"):
            model.train()


def perturb(model, x: Tensor, y: Tensor, attack: Attack, bounds: tuple[float, float] | None = None,
            target: Tensor | None = None) -> Tensor:
    """Return adversarial inputs for `x` (labels `y`; `target` the labels a targeted attack aims at):
    |x_adv - x| within attack.eps in its norm and x_adv within `bounds`, exactly."""
    if not isinstance(attack, Attack):
        raise ScidlError(f"attack={attack!r:.80} is not allowed: must be a scidl.attacks.Attack (fgsm(), pgd())")
    _check_batch(model, x, y, bounds, target)
    if attack.targeted and target is None:
        raise ScidlError("target=None is not allowed for a targeted attack: give the labels to aim at")
    goal, sign = (target, -1.0) if attack.targeted else (y, 1.0)
    x0 = x.detach()
    delta = torch.zeros_like(x0)
    if attack.random_start and attack.eps > 0:
        g = torch.Generator().manual_seed(attack.seed)
        if attack.norm == "linf":
            delta = (torch.rand(x0.shape, generator=g, dtype=x0.dtype) * 2 - 1) * attack.eps
        else:  # uniform in the L2 ball: a random direction, radius eps * u^(1/d)
            d = x0[0].numel()
            direction = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
            radius = torch.rand((len(x0),) + (1,) * (x0.dim() - 1), generator=g, dtype=x0.dtype) ** (1 / d)
            delta = direction / _flat_norm(direction).clamp_min(1e-30) * radius * attack.eps
    with _frozen(model):
        adv = _clip(x0 + delta, bounds)
        for _ in range(attack.steps):
            adv = adv.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(adv).double(), goal, reduction="sum")
            grad, = torch.autograd.grad(sign * loss, adv)
            if attack.norm == "linf":
                step = grad.sign()
            else:
                step = grad / _flat_norm(grad).clamp_min(1e-30)
            adv = x0 + project(adv.detach() + attack.alpha * step - x0, attack.eps, attack.norm)
            adv = _clip(adv, bounds)
    return adv.detach()


def _clip(x: Tensor, bounds) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def norms(delta: Tensor, norm: str) -> Tensor:
    """Return each row's perturbation norm."""
    check_choice("norm", norm, NORMS)
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def predictions(model, x: Tensor, batch: int = 4096) -> Tensor:
    """Return the model's predicted classes for `x`, without gradients."""
    with torch.no_grad(), _frozen(model):
        return torch.cat([model(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])


def robust_accuracy(model, x: Tensor, y: Tensor, attacks: list[Attack], bounds=None,
                    target_of: Callable[[Tensor], Tensor] | None = None) -> dict:
    """Return clean accuracy, each attack's robust accuracy and the pointwise worst case over all of
    them (`worst`): the share of inputs that every attack left correctly classified."""
    if isinstance(attacks, Attack) or not attacks:
        raise ScidlError(f"attacks={attacks!r:.80} is not allowed: must be a non-empty list of Attacks")
    _check_batch(model, x, y, bounds, None)
    correct = predictions(model, x) == y
    out = {"clean": float(correct.double().mean()), "by_attack": {}}
    survived = correct.clone()
    for a in attacks:
        target = target_of(y) if a.targeted else None
        if a.targeted and target is None:
            raise ScidlError(f"{a.name} is targeted: give target_of (labels -> labels to aim at)")
        ok = predictions(model, perturb(model, x, y, a, bounds, target)) == y
        out["by_attack"][a.name] = float((ok & correct).double().mean())
        survived &= ok
    out["worst"] = float(survived.double().mean())
    out["n"] = len(y)
    return out


def next_class(y: Tensor, n_classes: int = 10) -> Tensor:
    """Return the target (y + 1) mod n_classes: a fixed, label-dependent target for targeted attacks."""
    check_int("n_classes", n_classes, 2)
    return (y + 1) % n_classes


__all__ = ["Attack", "NORMS", "fgsm", "next_class", "norms", "perturb", "pgd", "predictions", "project",
           "robust_accuracy"]
