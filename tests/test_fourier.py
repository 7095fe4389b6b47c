import math

import torch

from scidl.phenomena.grokking import fourier


def test_basis_is_orthonormal_and_named():
    basis, names = fourier.make_fourier_basis(13)
    assert torch.allclose(basis @ basis.T, torch.eye(13), atol=1e-5)
    assert names[:3] == ["const", "cos 1", "sin 1"] and len(names) == 13


def test_energy_per_frequency_matches_torch_fft():
    torch.manual_seed(0)
    p = 17
    x = torch.randn(p, dtype=torch.float64)
    ours = fourier.freq_energy(fourier.fourier_transform(x))
    fft = torch.fft.rfft(x)
    # |X_k|^2 = (p/2) * (a_k^2 + b_k^2) for the unit-norm cos/sin rows
    reference = fft[1:].abs().square() * 2 / p
    assert torch.allclose(ours.double(), reference, rtol=1e-4)
    assert math.isclose(float(fourier.fourier_transform(x)[0]), float(fft[0].real) / math.sqrt(p),
                        rel_tol=1e-4)


def test_inverse_and_2d_transform():
    x = torch.randn(11, 11, 4)
    c = fourier.fourier_transform_2d(x)
    back = fourier.inverse_fourier_transform(fourier.inverse_fourier_transform(c, 0), 1)
    assert torch.allclose(back, x, atol=1e-5)
    assert torch.allclose(c.square().sum(), x.square().sum(), rtol=1e-4)  # Parseval


def _synthetic_embedding(p, freqs, d=32, noise=0.01):
    torch.manual_seed(0)
    x = torch.arange(p)[:, None].float()
    W = sum(torch.cos(2 * math.pi * k * x / p + torch.rand(1, d) * 6) * torch.randn(1, d)
            for k in freqs)
    return W + noise * torch.randn(p, d)


def test_find_key_freqs_on_synthetic_signal():
    W = _synthetic_embedding(59, [3, 17, 25])
    assert fourier.find_key_freqs(fourier.embedding_freq_energy(W)) == [3, 17, 25]
    assert fourier.find_key_freqs(fourier.embedding_freq_energy(torch.randn(59, 256))) == []


def test_project_freqs_keeps_or_removes():
    W = _synthetic_embedding(31, [4, 9], noise=0)
    kept = fourier.project_freqs(W, [4, 9], keep=True)
    assert torch.allclose(kept, W, atol=1e-4)
    removed = fourier.project_freqs(W, [4, 9], keep=False)
    assert removed.abs().max() < 1e-4
    only4 = fourier.project_freqs(W, [4], keep=True)
    assert fourier.find_key_freqs(fourier.embedding_freq_energy(only4)) == [4]


def test_neuron_fractions_and_clusters_on_known_neurons():
    p = 23
    a, b = torch.meshgrid(torch.arange(p).float(), torch.arange(p).float(), indexing="ij")
    w = 2 * math.pi / p
    neurons = torch.stack([torch.cos(w * 5 * (a + b)),                     # pure frequency 5
                           torch.cos(w * 7 * a) + torch.sin(w * 7 * b),      # pure frequency 7
                           torch.cos(w * 2 * a) + torch.cos(w * 9 * b)], -1)  # half 2, half 9
    frac = fourier.neuron_freq_fractions(neurons)
    assert torch.allclose(frac[0, 4], torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(frac[1, 6], torch.tensor(1.0), atol=1e-4)
    assert torch.allclose(frac[2, [1, 8]], torch.tensor([0.5, 0.5]), atol=1e-4)
    assert fourier.cluster_neurons(frac).tolist() == [5, 7, 0]


def test_logit_trig_fraction_recovers_planted_terms():
    p = 13
    a, b, c = torch.meshgrid(*(torch.arange(p).float(),) * 3, indexing="ij")
    logits = 2.0 * torch.cos(2 * math.pi * 3 * (a + b - c) / p) + 0.5 * torch.cos(2 * math.pi * 5 * (a + b - c) / p)
    frac, coef = fourier.logit_trig_fraction(logits, [3, 5])
    assert frac > 0.999 and math.isclose(coef[3], 2.0, rel_tol=1e-4) and math.isclose(coef[5], 0.5, rel_tol=1e-4)
    frac_wrong, _ = fourier.logit_trig_fraction(logits, [4])
    assert frac_wrong < 0.01


def test_freq_grid_norms_locates_a_product_term():
    p = 13
    a, b = torch.meshgrid(torch.arange(p).float(), torch.arange(p).float(), indexing="ij")
    grid = torch.cos(2 * math.pi * 2 * a / p) * torch.sin(2 * math.pi * 5 * b / p)
    norms = fourier.freq_grid_norms(fourier.fourier_transform_2d(grid))
    assert norms.shape == (7, 7)
    assert torch.argmax(norms).item() == 2 * 7 + 5
    assert torch.isclose(norms[2, 5].square(), grid.square().sum(), rtol=1e-4)
