"""Which algorithm a modular-addition model runs: the clock or the pizza (Zhong et al. 2023, "The
Clock and the Pizza: Two Stories in Mechanistic Explanation of Neural Networks", §4).

- The clock (Nanda et al.) multiplies the two operands' rotations, so the correct logit
  Q(a, b, a+b) does not depend on the distance a - b.
- The pizza averages the two embeddings, E_a + E_b, so its correct logit carries a factor
  |cos(w(a - b)/2)| and its gradients with respect to E_a and E_b agree.

The two statistics, as the paper defines them:
- distance irrelevance q = mean over d of std{Q(a, b, a+b) : a - b ≡ d} / std over all (a, b) of
  Q(a, b, a+b). A clock has q ≈ 1, a pizza much less. Raw logits, population std.
- gradient symmetricity s = mean over (a, b, c) triples of cos(∂Q_abc/∂E_a, ∂Q_abc/∂E_b), E the
  token embeddings at positions 0 and 1; a pizza has s ≈ 1.

Deviations: (1) the paper samples 100 triples for s; `n_triples` (default 1000) are drawn with a
seed. (2) For the one-hot MLP, whose pre-activation is W_in[a] + W_in[p + b], the two gradients
are identical, so s = 1 by construction and says nothing: `gradient_symmetricity` refuses it.
(3) The paper reads the phase diagram by eye; `label` reads q and s jointly with our thresholds
(pizza: q < 0.5 and s >= 0.9; clock: q >= 0.8 and s < 0.9; anything else intermediate), and only a
model that learned the task (accuracy >= 0.99), as the paper scores only those. (4) The paper's models
read `a b` at b's position; ours read `a b =` at '='. (The authors' training script also logs the
statistic on the largest incorrect logit; the paper and their evaluation use the correct logit, as here.)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from scidl.errors import ScidlError
from scidl.phenomena.grokking.circuits import all_tokens

PIZZA_Q = 0.5  # distance irrelevance below this: pizza-like (our threshold; the paper reads plots)
CLOCK_Q = 0.8  # distance irrelevance at or above this: clock-like
PIZZA_S = 0.9  # gradient symmetricity at or above this: pizza-like (a clock's gradients need not agree)


def _check_add(model, task) -> int:
    if getattr(task, "kind", None) != "grokking" or task.op != "add":
        raise ScidlError(f"task={task!r} is not allowed: the clock and the pizza are algorithms for "
                         "modular addition (op='add')")
    if getattr(model, "p", None) != task.p:
        raise ScidlError(f"model with p={getattr(model, 'p', None)!r} is not allowed for task.p={task.p}")
    return task.p


def _grid(model, task) -> tuple[Tensor, Tensor]:
    """Return the logits over every (a, b) pair (row a·p + b) in float64 and the answers (a + b) mod p."""
    p = _check_add(model, task)
    tokens = all_tokens(p)
    with torch.no_grad():
        return model.last_logits(tokens).double(), (tokens[:, 0] + tokens[:, 1]) % p


def _correct(logits: Tensor, answers: Tensor) -> Tensor:
    p = logits.shape[1]
    return logits[torch.arange(len(answers)), answers].view(p, p)


def _accuracy(logits: Tensor, answers: Tensor) -> float:
    return float((logits.argmax(-1) == answers).double().mean())


def correct_logits(model, task) -> Tensor:
    """Return Q(a, b, a+b) over the (a, b) grid, shape (p, p), float64."""
    return _correct(*_grid(model, task))


def distance_irrelevance_of(Q: Tensor) -> float:
    """Return q for a (p, p) grid of correct logits Q[a, b] (see the module docstring)."""
    if not isinstance(Q, Tensor) or Q.dim() != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 2:
        raise ScidlError(f"Q={Q!r} is not allowed: must be a square (p, p) tensor of correct logits, p >= 2")
    p = Q.shape[0]
    Q = Q.double()
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    d = ((a - b) % p).flatten()
    values = Q.flatten()
    overall = values.std(unbiased=False)
    if not torch.isfinite(values).all() or not float(overall) > 1e-12 * max(float(values.abs().max()), 1e-300):
        raise ScidlError("correct logits that are constant (or non-finite) are not allowed: distance "
                         "irrelevance is 0/0, undefined")
    within = torch.stack([values[d == k].std(unbiased=False) for k in range(p)])
    return float(within.mean() / overall)


def reading(model, task) -> dict[str, float | str]:
    """Return distance irrelevance q, accuracy over all pairs and the label, from one grid forward."""
    logits, answers = _grid(model, task)
    q, acc = distance_irrelevance_of(_correct(logits, answers)), _accuracy(logits, answers)
    return {"distance_irrelevance": q, "accuracy": acc, "algorithm": label(q, acc)}


def distance_irrelevance(model, task) -> float:
    """Return the model's distance irrelevance on modular addition (1: clock-like, ≈ 0: pizza-like)."""
    return distance_irrelevance_of(correct_logits(model, task))


def gradient_symmetricity(model, task, n_triples: int = 1000, seed: int = 0) -> float:
    """Return the mean cosine similarity of ∂Q_abc/∂E_a and ∂Q_abc/∂E_b over random (a, b, c)."""
    p = _check_add(model, task)
    if not hasattr(model, "hook_embed"):
        raise ScidlError(f"model={type(model).__name__} is not allowed: its pre-activation is W_in[a] + "
                         "W_in[p+b], so both gradients are equal and the symmetricity is 1 by construction")
    if isinstance(n_triples, bool) or not isinstance(n_triples, int) or n_triples < 1:
        raise ScidlError(f"n_triples={n_triples!r} is not allowed: must be an integer >= 1")
    g = torch.Generator().manual_seed(seed)
    abc = torch.randint(0, p, (n_triples, 3), generator=g)
    tokens = torch.stack([abc[:, 0], abc[:, 1], torch.full((n_triples,), p)], dim=1)
    leaf = {}

    def capture(x, hook):
        leaf["embed"] = x.detach().requires_grad_(True)
        return leaf["embed"]

    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", capture)]):
        logits = model(tokens)[:, -1]
    (grad,) = torch.autograd.grad(logits[torch.arange(n_triples), abc[:, 2]].sum(), leaf["embed"])
    grad = grad.double()  # (n, 3, d_model); row i's Q depends on row i's embeddings only
    cos = torch.nn.functional.cosine_similarity(grad[:, 0], grad[:, 1], dim=-1, eps=1e-300)
    if not torch.isfinite(cos).all():
        raise ScidlError("a zero gradient with respect to an operand embedding is not allowed: the cosine is undefined")
    return float(cos.mean())


def label(q: float, accuracy: float, s: float | None = None) -> str:
    """Return the algorithm a model that learned the task runs, read from q and s jointly (Zhong et
    al.'s two axes): 'clock' when q >= CLOCK_Q and s < PIZZA_S (distance irrelevant, gradients not
    symmetric), 'pizza' when q < PIZZA_Q and s >= PIZZA_S, 'intermediate' otherwise (the paper's
    non-circular and mixed models sit there). Without s (the one-hot MLP, where s = 1 by
    construction) only q speaks: 'pizza' (q < PIZZA_Q), 'intermediate' (PIZZA_Q <= q < CLOCK_Q) or
    'not pizza' (q >= CLOCK_Q; a clock cannot be told from other non-pizzas by q alone).
    'unlearned' if the accuracy over all pairs is below 0.99 (the paper scores only models that
    learned the task: an untrained transformer has q ≈ 1 and s ≈ 1, a clock and a pizza at once)."""
    for name, v in (("q", q), ("accuracy", accuracy), *((("s", s),) if s is not None else ())):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ScidlError(f"{name}={v!r} is not allowed: must be a number, not NaN")
    if accuracy < 0.99:
        return "unlearned"
    if s is None:
        return "pizza" if q < PIZZA_Q else "intermediate" if q < CLOCK_Q else "not pizza"
    if q >= CLOCK_Q and s < PIZZA_S:
        return "clock"
    if q < PIZZA_Q and s >= PIZZA_S:
        return "pizza"
    return "intermediate"


def accuracy(model, task) -> float:
    """Return the model's accuracy on modular addition over all p^2 pairs."""
    return _accuracy(*_grid(model, task))
