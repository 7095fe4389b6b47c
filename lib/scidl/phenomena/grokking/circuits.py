"""Circuit views of a modular-arithmetic model over the full (a, b) grid."""
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scidl.phenomena.grokking import fourier
from scidl.errors import check_number
from scidl.phenomena.grokking.model import MLP, NEURON_HOOK, Transformer, embedding_matrix

Model = Transformer | MLP


def all_tokens(p: int) -> Int[Tensor, "p*p 3"]:
    """Return tokens `a b =` for every pair, row-major (row a*p + b), including b = 0."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    return torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)


def _last(act: Tensor) -> Tensor:
    return act[:, -1] if act.dim() == 3 else act  # transformer: (batch, pos, n) -> last position


@torch.no_grad()
def neuron_acts(model: Model) -> Float[Tensor, "p p d_mlp"]:
    """Return MLP neuron activations at the last position over the (a, b) grid."""
    hook = NEURON_HOOK[model.cfg.arch]
    _, cache = model.run_with_cache(all_tokens(model.p), names_filter=hook)
    return _last(cache[hook]).reshape(model.p, model.p, -1)


@torch.no_grad()
def grid_logits(model: Model) -> Float[Tensor, "p p p"]:
    """Return last-position logits over the grid: [a, b, c]."""
    return model.last_logits(all_tokens(model.p)).reshape(model.p, model.p, model.p)


@torch.no_grad()
def attention_from_eq(model: Transformer) -> Float[Tensor, "p p head 3"]:
    """Return each head's attention from the '=' position to positions a, b, = over the grid."""
    hook = "blocks.0.attn.hook_pattern"
    _, cache = model.run_with_cache(all_tokens(model.p), names_filter=hook)
    pattern = cache[hook][:, :, -1, :]  # (batch, head, key)
    return pattern.reshape(model.p, model.p, *pattern.shape[1:])


def neuron_logit_map(model: Model) -> Float[Tensor, "d_mlp p"]:
    """Return W_L, the map from MLP neurons to logits: W_out @ W_U (transformer) or W_out (MLP)."""
    if isinstance(model, Transformer):
        return model.blocks[0].mlp.W_out @ model.W_U
    return model.W_out


def embedding_energy(model: Model) -> Float[Tensor, "k"]:
    """Return each frequency's share of the embedding's non-constant Fourier energy."""
    return fourier.embedding_freq_energy(embedding_matrix(model))


def key_freqs(model: Model, threshold: float = 0.85, min_frac: float = 0.02) -> list[int]:
    """Return the model's key frequencies as Nanda et al. define them: the frequencies that are the
    dominant frequency (>= `threshold` of the variance) of at least `min_frac` of the MLP neurons.

    The aggregate-embedding rule (fourier.find_key_freqs: a frequency's share of W_E's energy above
    a multiple of the uniform share) agrees on grokked transformers at p=113 but misses real key
    frequencies at smaller p, where the uniform share is large; both are shown in notebook 03.
    """
    check_number("min_frac", min_frac, 0, 1)
    _, clusters = neuron_clusters(model, threshold)
    counts = torch.bincount(clusters, minlength=fourier.n_freqs(model.p) + 1)
    return [k for k in range(1, len(counts)) if counts[k] >= max(1, min_frac * len(clusters))]


def neuron_clusters(model: Model, threshold: float = 0.85) -> tuple[Tensor, Tensor]:
    """Return (fractions (n, k) of each neuron's variance per frequency, cluster id per neuron)."""
    check_number("threshold", threshold, 0, 1, low_open=True)
    fractions = fourier.neuron_freq_fractions(neuron_acts(model))
    return fractions, fourier.cluster_neurons(fractions, threshold)
