"""Circuit readings against models built by hand, whose answer is known exactly."""
import math

import torch

from scidl.phenomena.grokking import circuits
from scidl.config import make_config
from scidl.registry import make_model


def _planted_mlp(p: int, plan: dict[int, int]):
    """A quadratic one-hot MLP whose neurons each carry exactly one frequency: pre = cos(2π k' a / p)
    with 2k' ≡ k (mod p), so pre² = 1/2 + cos(2π k a / p) / 2 lives at frequency k alone."""
    n = sum(plan.values())
    cfg = make_config(arch="mlp", act="quadratic", p=p, d_mlp=n)
    model = make_model(cfg.model, cfg.task)
    a = torch.arange(p, dtype=torch.float64)
    rows, neuron = torch.zeros(2 * p, n), 0
    for k, count in plan.items():
        half = k * pow(2, -1, p) % p
        for _ in range(count):
            rows[:p, neuron] = torch.cos(2 * math.pi * half * a / p).float()
            neuron += 1
    with torch.no_grad():
        model.W_in.copy_(rows)
    return model


def test_key_freqs_are_the_frequencies_of_neuron_clusters():
    model = _planted_mlp(23, {3: 20, 7: 19, 5: 1})
    fractions, clusters = circuits.neuron_clusters(model)
    assert clusters.tolist() == [3] * 20 + [7] * 19 + [5]
    assert circuits.key_freqs(model, min_frac=0.05) == [3, 7]  # one neuron of 40 is not a cluster
    assert circuits.key_freqs(model, min_frac=0.0) == [3, 5, 7]


def test_neuron_logit_map_is_W_out_times_W_U():
    cfg = make_config(p=23, d_model=32, d_mlp=64)
    model = make_model(cfg.model, cfg.task)
    assert torch.allclose(circuits.neuron_logit_map(model), model.blocks[0].mlp.W_out @ model.W_U)
