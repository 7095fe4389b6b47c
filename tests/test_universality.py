"""Generalization tools (notebook 06): S_n and its irreps, the additive / discrete-log / irrep bases,
aggregate and per-neuron spectra, and the clock-vs-pizza readings, each against a known answer or
an independent implementation (numpy's FFT, finite differences, the textbook character table)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scidl
from scidl.errors import ScidlError
from scidl.phenomena.grokking import algorithms, harmonics
from scidl.phenomena.grokking.groups import GroupTask, SymmetricGroup, make_dataset, partitions, standard_tableaux
from scidl.phenomena.grokking.model import Transformer

# ---------------------------------------------------------------- S_n and its irreps


@pytest.mark.parametrize("n", [3, 4, 5])
def test_irreps_are_representations_and_irreducible(n):
    G = SymmetricGroup(n)
    T = G.table
    dims = []
    chars = G.characters()
    for name, rho in G.irreps.items():
        # the group law, for every pair: rho(a∘b) = rho(a) rho(b)
        assert torch.allclose(rho[T], torch.einsum("aij,bjk->abik", rho, rho), atol=1e-12), name
        # real orthogonal matrices
        eye = torch.eye(rho.shape[1], dtype=torch.float64)
        assert torch.allclose(rho @ rho.transpose(1, 2), eye.expand_as(rho), atol=1e-12)
        dims.append(rho.shape[1])
    # irreducible and pairwise inequivalent: the characters are orthonormal
    X = torch.stack(list(chars.values()))
    assert torch.allclose(X @ X.T / G.order, torch.eye(len(X), dtype=torch.float64), atol=1e-12)
    assert sum(d * d for d in dims) == G.order == math.factorial(n)
    assert len(dims) == len(partitions(n))  # as many irreps as conjugacy classes (cycle types)


def test_s4_character_table_matches_the_textbook():
    G = SymmetricGroup(4)
    # class representatives: e, (01), (01)(23), (012), (0123), as tuples g = (g(0), ..., g(3))
    reps = [(0, 1, 2, 3), (1, 0, 2, 3), (1, 0, 3, 2), (1, 2, 0, 3), (1, 2, 3, 0)]
    expected = {"4": [1, 1, 1, 1, 1], "1,1,1,1": [1, -1, 1, 1, -1], "3,1": [3, 1, -1, 0, -1],
                "2,1,1": [3, -1, -1, 0, 1], "2,2": [2, 0, 2, -1, 0]}
    chars = G.characters()
    for name, row in expected.items():
        got = [round(float(chars[name][G.index(g)])) for g in reps]
        assert got == row, name


def test_standard_tableaux_count_is_the_hook_length_formula():
    for shape, count in {(3, 1): 3, (2, 2): 2, (3, 2): 5, (3, 1, 1): 6, (2, 2, 1): 5}.items():
        assert len(standard_tableaux(shape)) == count


def test_group_law_table_and_inverse():
    G = SymmetricGroup(4)
    els = G.elements
    for a in range(0, 24, 5):
        for b in range(0, 24, 7):
            assert els[int(G.table[a, b])] == tuple(els[a][els[b][i]] for i in range(4))
    inv = G.inverse()
    assert (G.table[torch.arange(24), inv] == 0).all()
    assert int((G.sign() == 1).sum()) == 12
    with pytest.raises(ScidlError, match="n=6"):
        SymmetricGroup(6)


def test_group_task_dataset_and_bad_input():
    task = GroupTask(group="S3", frac_train=0.5, data_seed=1)
    data = make_dataset(task)
    assert data.tokens.shape == (36, 3) and int(data.is_train.sum()) == 18 == task.n_train
    assert (data.tokens[:, 2] == 6).all()
    G = task.symmetric_group
    assert (data.labels == G.table[data.tokens[:, 0], data.tokens[:, 1]]).all()
    with pytest.raises(scidl.ConfigError, match="group"):
        GroupTask(group="A5")
    with pytest.raises(scidl.ConfigError, match="frac_train"):
        GroupTask(frac_train=1.5)
    cfg = scidl.make_config(kind="group", group="S3", arch="mlp", d_mlp=16, steps=3)
    assert cfg.task.kind == "group" and scidl.make_model(cfg.model, cfg.task).p == 6


def test_group_task_trains_and_stores(tmp_path):
    cfg = scidl.make_config(kind="group", group="S3", frac_train=0.5, arch="mlp", act="quadratic", d_mlp=32,
                            lr=3e-3, steps=20, eval_every=10, checkpoint_every=0)
    run = scidl.train(cfg, store=scidl.RunStore(tmp_path / "runs"))
    assert list(run.metrics.step) == [0, 10, 20] and run.config == cfg
    again = scidl.RunStore(tmp_path / "runs").load(cfg)
    assert again.hash == run.hash


# ---------------------------------------------------------------- bases


@pytest.mark.parametrize("make", [lambda: harmonics.additive_basis(43), lambda: harmonics.dlog_basis(43),
                                  lambda: harmonics.irrep_basis(SymmetricGroup(4)),
                                  lambda: harmonics.irrep_basis(SymmetricGroup(5))])
def test_bases_are_orthonormal_on_their_support(make):
    b = make()
    cover = b.rows.abs().sum(0) > 0
    R = b.rows[:, cover]
    assert R.shape[0] == R.shape[1]  # complete on the support
    assert torch.allclose(R @ R.T, torch.eye(len(R), dtype=torch.float64), atol=1e-12)
    assert sorted(i for rows in b.components.values() for i in rows) == list(range(len(R)))
    assert abs(sum(b.chance().values()) - 1) < 1e-12


def test_primitive_root_and_discrete_log():
    assert harmonics.primitive_root(59) == 2 and harmonics.primitive_root(41) == 6
    log = harmonics.discrete_log(41)
    assert int(log[0]) == -1 and sorted(log[1:].tolist()) == list(range(40))
    assert all(pow(6, int(log[x]), 41) == x for x in range(1, 41))
    with pytest.raises(ScidlError, match="p=40"):
        harmonics.primitive_root(40)


def _numpy_shares(W: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Independent: each frequency's share of non-constant energy, by numpy's FFT of W's rows taken
    in `order` (identity for Z_p; the discrete-log order for Z_p^*)."""
    x = W[order]
    n = len(order)
    F = np.fft.rfft(x, axis=0)
    power = np.abs(F) ** 2 / n
    power[1:(n + 1) // 2] *= 2  # k and n-k; the Nyquist term (even n) is its own conjugate
    per_k = power[1:].sum(axis=1)
    return per_k / per_k.sum()


@pytest.mark.parametrize("p", [37, 47])
def test_spectra_agree_with_numpy_fft(p):
    W = torch.randn(p, 9, generator=torch.Generator().manual_seed(p), dtype=torch.float64)
    additive = harmonics.spectrum(W, harmonics.additive_basis(p)).shares
    assert np.allclose([additive[k] for k in range(1, p // 2 + 1)], _numpy_shares(W.numpy(), np.arange(p)))
    g = harmonics.primitive_root(p)
    order = np.array([pow(g, e, p) for e in range(p - 1)])  # the element whose log is e
    dlog = harmonics.spectrum(W, harmonics.dlog_basis(p)).shares
    assert np.allclose([dlog[k] for k in range(1, (p - 1) // 2 + 1)], _numpy_shares(W.numpy(), order))


def _planted(p: int, freqs, dlog: bool, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A weight matrix whose every column is cos(2πk·u/n + φ) for a k from `freqs`, u = x (n = p) or
    u = log x (n = p - 1, row 0 random)."""
    g = torch.Generator().manual_seed(seed)
    n = p - 1 if dlog else p
    u = harmonics.discrete_log(p).double() if dlog else torch.arange(p, dtype=torch.float64)
    ks = torch.tensor(freqs)[torch.randint(len(freqs), (width,), generator=g)].double()
    phase = torch.rand(width, generator=g, dtype=torch.float64) * 2 * math.pi
    W = torch.cos(2 * math.pi * u[:, None] * ks[None] / n + phase)
    if dlog:
        W[0] = torch.randn(width, generator=g, dtype=torch.float64)  # 0 is outside Z_p^*: ignored
    return W


def test_planted_frequencies_are_read_back_in_the_fitting_basis_only():
    p = 43
    W = _planted(p, [4, 11], dlog=True)
    dlog = harmonics.spectrum(W, harmonics.dlog_basis(p))
    assert sorted(dlog.key()) == [4, 11] and dlog.top_share(2) > 1 - 1e-9
    additive = harmonics.spectrum(W, harmonics.additive_basis(p))
    assert not additive.is_sparse() and additive.top_share(2) < 0.5
    with pytest.raises(harmonics.NoSparseSpectrum, match="additive Z_43"):
        additive.key()
    assert harmonics.neuron_concentration(W, harmonics.dlog_basis(p)) > 1 - 1e-9
    assert harmonics.neuron_concentration(W, harmonics.additive_basis(p)) < 0.5
    Wa = _planted(p, [2, 5, 9], dlog=False)
    assert sorted(harmonics.spectrum(Wa, harmonics.additive_basis(p)).key()) == [2, 5, 9]


def test_per_neuron_sparsity_without_aggregate_sparsity():
    """Gromov's MLP: each neuron one frequency, the neurons spread over all of them."""
    p = 41
    W = _planted(p, list(range(1, 21)), dlog=False, width=400)
    basis = harmonics.additive_basis(p)
    assert not harmonics.spectrum(W, basis).is_sparse()
    assert harmonics.neuron_concentration(W, basis) > 1 - 1e-9
    assert harmonics.neuron_concentration(harmonics.shuffled(W), basis) < 0.5
    # the MLP's (values, neurons, 2) layout: each neuron's a- and b-weights pooled
    both = torch.stack([W, W.roll(3, dims=0)], dim=-1)
    assert harmonics.neuron_concentration(both, basis) > 1 - 1e-9


def test_planted_irrep_model_is_read_back():
    G = SymmetricGroup(4)
    basis = harmonics.irrep_basis(G)
    rho = G.irreps["3,1"]  # (24, 3, 3): a model embedding g as a mix of rho(g)'s entries
    mix = torch.randn(9, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W = rho.flatten(1) @ mix + 0.5  # plus a constant: the trivial component is not counted
    s = harmonics.spectrum(W, basis)
    assert s.key() == ["3,1"] and s.shares["3,1"] > 1 - 1e-12
    share, chance = s.key_share()
    assert share > 1 - 1e-12 and abs(chance - 9 / 23) < 1e-12
    two = torch.cat([rho.flatten(1), G.irreps["2,2"].flatten(1)], dim=1) @ torch.randn(13, 32, dtype=torch.float64)
    assert sorted(harmonics.spectrum(two, basis).ranked()[:2]) == ["2,2", "3,1"]
    with pytest.raises(ScidlError, match="no non-trivial energy"):
        harmonics.spectrum(torch.ones(24, 4, dtype=torch.float64), basis)


def test_basis_for_picks_the_operations_group():
    assert harmonics.basis_for(scidl.ModularTask(op="add", p=23)).name == "additive Z_23"
    assert harmonics.basis_for(scidl.ModularTask(op="div", p=23)).name.startswith("discrete-log Z_22")
    assert harmonics.basis_for(scidl.ModularTask(op="mul", p=23), "additive").name == "additive Z_23"
    assert harmonics.basis_for(GroupTask(group="S4")).name == "irreps S4"
    with pytest.raises(ScidlError, match="which='fourier'"):
        harmonics.basis_for(scidl.ModularTask(), "fourier")


def test_spectrum_bad_input():
    basis = harmonics.additive_basis(23)
    with pytest.raises(ScidlError, match="W="):
        harmonics.spectrum(torch.randn(22, 4), basis)
    with pytest.raises(ScidlError, match="non-finite"):
        harmonics.spectrum(torch.full((23, 4), float("nan")), basis)
    s = harmonics.spectrum(torch.randn(23, 4), basis)
    with pytest.raises(ScidlError, match="k=0"):
        s.top_share(0)
    with pytest.raises(ScidlError, match="mass=1.5"):
        s.candidates(1.5)
    with pytest.raises(ScidlError, match="basis="):
        harmonics.spectrum(torch.randn(23, 4), "dlog")
    with pytest.raises(ScidlError, match="group="):
        harmonics.irrep_basis("S4")
    with pytest.raises(ScidlError, match="task="):
        harmonics.basis_for(None)
    with pytest.raises(ScidlError, match="model="):
        harmonics.operand_weights(torch.nn.Linear(2, 2))
    assert harmonics.dlog_basis(np.int64(23)).name == harmonics.dlog_basis(23).name
    # shares are scale-free: no overflow or underflow at extreme scales
    W = torch.randn(23, 4, dtype=torch.float64)
    for scale in (1e200, 1e-200):
        assert harmonics.spectrum(W * scale, basis).shares == pytest.approx(harmonics.spectrum(W, basis).shares)


# ---------------------------------------------------------------- clock and pizza


class _Logits:
    """A stand-in model whose logits over (a, b, c) are given."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.p, self.logits = logits.shape[0], logits

    def last_logits(self, tokens):
        return self.logits[tokens[:, 0], tokens[:, 1]]


def _grid(p: int):
    return torch.meshgrid(*(torch.arange(p, dtype=torch.float64),) * 3, indexing="ij")


def test_distance_irrelevance_on_planted_clock_and_pizza():
    p, w = 23, 3
    task = scidl.ModularTask(op="add", p=p)
    a, b, c = _grid(p)
    clock = torch.cos(2 * math.pi * w * (a + b - c) / p)
    pizza = torch.abs(torch.cos(math.pi * w * (a - b) / p)) * clock
    assert algorithms.distance_irrelevance(_Logits(pizza), task) < 1e-12  # depends on a - b only
    noise = 0.1 * torch.randn(p, p, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = algorithms.distance_irrelevance(_Logits(clock + noise), task)  # noise unrelated to distance
    assert q > 0.85 and algorithms.label(q, 1.0, s=0.3) == "clock" and algorithms.label(0.1, 1.0, s=0.99) == "pizza"
    # q and s jointly, with an intermediate class; q alone (the MLP) cannot name a clock
    assert algorithms.label(q, 1.0, s=0.95) == "intermediate" and algorithms.label(0.1, 1.0, s=0.3) == "intermediate"
    assert algorithms.label(0.6, 1.0, s=0.3) == "intermediate" and algorithms.label(0.6, 1.0) == "intermediate"
    assert algorithms.label(q, 1.0) == "not pizza" and algorithms.label(0.1, 1.0) == "pizza"
    assert algorithms.label(0.1, 0.5) == "unlearned" and algorithms.label(0.1, 0.5, s=0.99) == "unlearned"
    with pytest.raises(ScidlError, match="s=nan"):
        algorithms.label(0.1, 1.0, s=float("nan"))
    with pytest.raises(ScidlError, match="q=nan"):
        algorithms.label(float("nan"), 1.0)
    with pytest.raises(ScidlError, match="undefined"):
        algorithms.distance_irrelevance(_Logits(clock), task)  # the correct logit is constant: 0/0
    with pytest.raises(ScidlError, match="Q="):
        algorithms.distance_irrelevance_of(torch.randn(0, 0))
    with pytest.raises(ScidlError, match="modular addition"):
        algorithms.distance_irrelevance(_Logits(clock), scidl.ModularTask(op="mul", p=p))


def test_distance_irrelevance_independent_formula():
    Q = torch.randn(7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    groups = {d: [float(Q[a, b]) for a in range(7) for b in range(7) if (a - b) % 7 == d] for d in range(7)}
    expected = np.mean([np.std(v) for v in groups.values()]) / np.std(Q.numpy())
    assert abs(algorithms.distance_irrelevance_of(Q) - expected) < 1e-12


def _transformer(p: int, seed: int = 0) -> Transformer:
    cfg = scidl.make_config(p=p, d_model=32, n_heads=4, d_mlp=64)
    return scidl.make_model(cfg.model, cfg.task, seed=seed)


def test_gradient_symmetricity_is_one_for_a_model_of_the_embedding_sum():
    """Uniform attention (W_Q = W_K = 0) averages E_a and E_b: a pizza by construction, s = 1."""
    p = 23
    model = _transformer(p)
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
        model.blocks[0].attn.W_K.zero_()
    task = scidl.ModularTask(op="add", p=p)
    assert abs(algorithms.gradient_symmetricity(model, task, n_triples=200) - 1) < 1e-9
    assert all(prm.grad is None for prm in model.parameters())  # no side effect on the model


def test_gradient_symmetricity_matches_finite_differences():
    p = 23
    model = _transformer(p, seed=3).double()
    task = scidl.ModularTask(op="add", p=p)
    s = algorithms.gradient_symmetricity(model, task, n_triples=5, seed=7)
    abc = torch.randint(0, p, (5, 3), generator=torch.Generator().manual_seed(7))
    cosines = []
    for a, b, c in abc.tolist():
        grads = []
        for pos in (0, 1):
            g = torch.zeros(model.W_E.shape[1], dtype=torch.float64)
            for i in range(len(g)):
                vals = []
                for eps in (1e-6, -1e-6):
                    def bump(x, hook, i=i, eps=eps, pos=pos):
                        x = x.clone()
                        x[:, pos, i] += eps
                        return x
                    with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", bump)]):
                        vals.append(float(model(torch.tensor([[a, b, p]]))[0, -1, c]))
                g[i] = (vals[0] - vals[1]) / 2e-6
            grads.append(g)
        cosines.append(float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)))
    assert abs(s - float(np.mean(cosines))) < 1e-6


def test_gradient_symmetricity_refuses_the_one_hot_mlp():
    cfg = scidl.make_config(arch="mlp", p=23, d_mlp=32)
    with pytest.raises(ScidlError, match="by construction"):
        algorithms.gradient_symmetricity(scidl.make_model(cfg.model, cfg.task), cfg.task)


def test_reading_is_distance_irrelevance_accuracy_and_label_from_one_grid():
    p = 23
    task = scidl.ModularTask(op="add", p=p)
    a, b, c = _grid(p)
    logits = torch.cos(2 * math.pi * 3 * (a + b - c) / p) + 0.1 * torch.randn(
        p, p, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = _Logits(logits)
    r = algorithms.reading(model, task)
    assert r["distance_irrelevance"] == algorithms.distance_irrelevance(model, task)
    assert r["accuracy"] == algorithms.accuracy(model, task) == 1.0
    assert r["algorithm"] == algorithms.label(r["distance_irrelevance"], 1.0) == "not pizza"  # q alone
