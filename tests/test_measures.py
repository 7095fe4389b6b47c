import math

import pandas as pd
import torch
import torch.nn.functional as F

from scidl.config import make_config
from scidl.measures import Context, detect_phases, excluded_loss, gini, restricted_loss, trig_directions
from scidl.tasks import make_dataset


class PlantedLogits(torch.nn.Module):
    """A 'model' whose logits are exactly a*cos(2πw(a+b−c)/p) for w in freqs, plus noise terms."""

    def __init__(self, p, freqs, noise_freq=None):
        super().__init__()
        a, b, c = torch.meshgrid(*(torch.arange(p).float(),) * 3, indexing="ij")
        L = sum(5 * torch.cos(2 * math.pi * w * (a + b - c) / p) for w in freqs)
        if noise_freq:
            L = L + 5 * torch.cos(2 * math.pi * noise_freq * (a - c) / p)
        self.p, self.L = p, L

    def last_logits(self, tokens):
        return self.L[tokens[:, 0], tokens[:, 1]]


def test_trig_directions_are_orthonormal():
    D = trig_directions(11, [1, 3, 4], 1)
    assert torch.allclose(D @ D.T, torch.eye(6, dtype=torch.float64), atol=1e-9)


def test_restricted_and_excluded_loss_on_planted_logits():
    p = 13
    data = make_dataset(make_config(p=p, frac_train=0.5).task)
    ctx = Context(data, (2, 5), "add")
    pure = PlantedLogits(p, [2, 5])
    full_loss = float(F.cross_entropy(pure.last_logits(data.tokens), data.labels))
    assert math.isclose(restricted_loss(pure, ctx), full_loss, rel_tol=1e-5)
    assert math.isclose(excluded_loss(pure, ctx), math.log(p), rel_tol=1e-5)  # nothing left: uniform
    noisy = PlantedLogits(p, [2, 5], noise_freq=3)  # an extra term that does not solve the task
    assert restricted_loss(noisy, ctx) < excluded_loss(noisy, ctx)
    assert math.isnan(restricted_loss(pure, Context(data, (2, 5), "mul")))


def test_gini_reference_values():
    assert gini(torch.ones(10)) == 0.0
    assert math.isclose(gini(torch.tensor([0.0, 0, 0, 1])), 0.75)


def test_detect_phases_on_synthetic_curves():
    steps = list(range(0, 1100, 100))
    m = pd.DataFrame({"step": steps,
                      "train_acc": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                      "test_acc": [0, 0, 0, 0, .01, .02, .1, .6, .995, 1, 1],
                      "test_loss": [4, 8, 10, 12, 11, 9, 5, 1.0, 0.1, 0.05, 0.01]})
    assert detect_phases(m) == {"memorization_end": 100, "circuit_formation_end": 700, "cleanup_end": 800}


def test_first_crossing_and_value_at():
    from scidl.measures import first_crossing, value_at
    t = pd.DataFrame({"step": [0, 10, 20, 30], "x": [5.0, 0.1, 2.0, 3.0]})
    assert first_crossing(t, "x", 1.0, after=0) == 20 and first_crossing(t, "x", 9.0) is None
    assert value_at(t, "x", 25) == 2.0
