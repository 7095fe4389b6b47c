"""Progress measures against planted inputs with known answers, and against an independent
implementation of Nanda et al.'s code (tests/reference_nanda.py, which does not import scidl and
runs its own forward pass from the saved checkpoint; tests/test_reference_forward.py checks that
forward against scidl's and shows that a planted operand swap is caught)."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import reference_nanda as ref
from scidl.phenomena.grokking import circuits, fourier
from scidl.config import make_config
from scidl.phenomena.grokking.measures import (MEASURES, Context, MeasureError, detect_phases, excluded_loss, gini, gini_W_E, gini_W_L,
                            key_logit_components, lead_null, measure_leads, move_step, progress_measures,
                            restricted_loss, sum_squared_weights)
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import cross_entropy, train


class PlantedLogits(torch.nn.Module):
    """A 'model' whose grid logits are a given (p, p, p) tensor [a, b, c]."""

    def __init__(self, L):
        super().__init__()
        self.p, self.L = L.shape[0], L.float()

    def last_logits(self, tokens):
        return self.L[tokens[:, 0], tokens[:, 1]]


def _grid(p):
    a, b, c = torch.meshgrid(*(torch.arange(p, dtype=torch.float64),) * 3, indexing="ij")
    return a, b, c


def _key_terms(p, freqs, sign, seed=0):
    """cos(w(a±b))·g(c) + sin(w(a±b))·h(c) with random g, h: only key-frequency components."""
    a, b, _ = _grid(p)
    gen = torch.Generator().manual_seed(seed)
    L = torch.zeros(p, p, p, dtype=torch.float64)
    for w in freqs:
        g, h = torch.randn(p, generator=gen, dtype=torch.float64), torch.randn(p, generator=gen, dtype=torch.float64)
        angle = 2 * math.pi * w * (a + sign * b) / p
        L += 3 * (torch.cos(angle) * g + torch.sin(angle) * h)
    return L


@pytest.mark.parametrize("op, sign", [("add", 1), ("sub", -1)])
def test_key_terms_only_restricted_equals_full_and_excluded_is_log_p(op, sign):
    p, key = 13, (2, 5)
    data = make_dataset(make_config(p=p, op=op, frac_train=0.5).task)
    L = _key_terms(p, key, sign)
    model = PlantedLogits(L)
    ctx = Context(data, key, op)
    full = float(cross_entropy(model.last_logits(data.tokens), data.labels))
    assert math.isclose(restricted_loss(model, ctx), full, rel_tol=1e-6)
    assert math.isclose(excluded_loss(model, ctx), math.log(p), rel_tol=1e-6)  # nothing left: uniform


def test_planted_term_is_removed_completely_not_5_percent():
    """cos(w(a+b))·g(c) is removed 100 % for every output c (a global cos(w(a+b−c)) direction
    would remove only its projection)."""
    p = 17
    L = _key_terms(p, (3,), 1).reshape(p * p, p)
    kept = key_logit_components(L, (3,), 1)
    assert torch.allclose(kept, L, atol=1e-10)


def test_logits_without_key_terms_are_left_unchanged():
    p, key = 13, (2, 5)
    a, b, c = _grid(p)
    L = 2 * torch.cos(2 * math.pi * 3 * (a + b - c) / p) + torch.cos(2 * math.pi * 2 * (a - b) / p) + 0.1 * c
    data = make_dataset(make_config(p=p, frac_train=0.5).task)
    model, ctx = PlantedLogits(L), Context(data, key, "add")
    assert torch.allclose(key_logit_components(L.reshape(p * p, p), key, 1), torch.zeros(p * p, p, dtype=torch.float64), atol=1e-10)
    train_loss = float(cross_entropy(model.last_logits(data.train[0]), data.train[1]))
    assert math.isclose(excluded_loss(model, ctx), train_loss, rel_tol=1e-6)
    bias_only = L.reshape(p * p, p).mean(0, keepdim=True).expand(p * p, p)  # restricted = per-c bias
    assert math.isclose(restricted_loss(model, ctx), float(cross_entropy(bias_only, data.labels)), rel_tol=1e-6)


def test_undefined_measures_raise_instead_of_nan():
    data = make_dataset(make_config(p=13).task)
    model = PlantedLogits(_key_terms(13, (2,), 1))
    with pytest.raises(MeasureError, match="key_freqs=()"):
        restricted_loss(model, Context(data, (), "add"))
    with pytest.raises(MeasureError, match="op='mul'"):
        excluded_loss(model, Context(data, (2,), "mul"))
    with pytest.raises(MeasureError, match="Gini"):
        gini(torch.zeros(5))


def test_gini_known_values_and_one_hot_spectrum():
    assert gini(torch.ones(10)) == 0.0
    assert math.isclose(gini(torch.tensor([0.0, 0, 0, 1])), 0.75)
    assert math.isclose(gini(torch.tensor([0.0, 0, 1, 1])), 0.5)
    p = 101  # an embedding that is one Fourier component: Gini -> 1 as p grows
    basis, _ = fourier.make_fourier_basis(p, torch.float64)
    W = basis[7][:, None] * torch.randn(1, 16, dtype=torch.float64)
    assert gini(fourier.fourier_component_norms(W)) == pytest.approx(1 - 1 / (p - 1), abs=1e-9)
    assert gini(fourier.fourier_component_norms(torch.randn(p, 64))) < 0.3


def _reference_side(run, op):
    """What the reference sees of a finished run, read from disk without scidl: the final
    checkpoint's raw tensors, its own float64 forward over the grid (logits [a, b, c] and neuron
    activations [a, b, n] at '='), and its own labels. scidl's grid_logits / neuron_acts are not used."""
    state, config = ref.load_run_checkpoint(run.path)
    logits, acts = ref.grid_forward(state, act=config["model"]["act"])
    p = config["task"]["p"]
    return state, logits, acts, ref.grid_labels(p, op)


@pytest.mark.parametrize("op, p, sign", [("add", 31, 1), ("sub", 29, -1)])
def test_agrees_with_independent_reference_on_a_trained_model(op, p, sign, tmp_path):
    """Other operations and moduli than the notebooks use; tiny transformers trained here. The
    reference computes its logits from the saved checkpoint with its own forward pass, so a bug in
    scidl's forward (say, operands swapped) makes the two sides disagree."""
    from scidl.store import RunStore
    cfg = make_config(op=op, p=p, d_model=32, n_heads=4, d_mlp=64, steps=150, lr=3e-3, eval_every=50,
                      checkpoint_every=0)
    run = train(cfg, RunStore(tmp_path), progress=False)
    model = run.load_model()
    data = make_dataset(cfg.task)
    state, L, _, labels = _reference_side(run, op)
    # scidl's dataset is the grid in row a*p + b order with the reference's answers (the split is scidl's)
    assert torch.equal(data.tokens, ref.grid_tokens(p)) and torch.equal(data.labels, labels)
    L = L.flatten(0, 1)
    key = (1, 4, 7)
    ctx = Context(data, key, op)
    ours = [restricted_loss(model, ctx), excluded_loss(model, ctx), gini_W_E(model, ctx),
            gini_W_L(model, ctx), sum_squared_weights(model, ctx)]
    theirs = [ref.restricted_loss(L, labels, key, sign=sign),
              ref.excluded_loss(L, labels, data.is_train, key, sign=sign),
              ref.gini_fourier_W_E(state["W_E"][:p].double()),
              ref.gini_fourier_W_L(state["blocks.0.mlp.W_out"].double(), state["W_U"].double()),
              ref.sum_squared_weights(state)]
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("op, p, steps", [("sub", 29, 300), ("add", 31, 200)])
def test_key_freqs_agree_with_independent_neuron_cluster_rule(op, p, steps, tmp_path):
    """The paper's key-frequency rule (neurons clustered by dominant 2-D frequency, >= 0.85 explained,
    clusters of >= max(1, 2 % of d_mlp) neurons), re-implemented in reference_nanda, on tiny
    transformers for other operations and moduli than the notebooks use. The reference's neuron
    activations come from its own forward pass over the saved checkpoint."""
    from scidl.store import RunStore
    cfg = make_config(op=op, p=p, d_model=32, n_heads=4, d_mlp=128, frac_train=0.8, lr=1e-2, steps=steps,
                      eval_every=100, checkpoint_every=0)
    run = train(cfg, RunStore(tmp_path), progress=False)
    model = run.load_model()
    acts = circuits.neuron_acts(model)
    _, _, ref_acts, _ = _reference_side(run, op)
    assert acts.shape == ref_acts.shape == (p, p, 128)
    # the fractions below are blind to a <-> b (a transposed grid has the same 2-D spectrum per block)
    gap = float((acts.double() - ref_acts).abs().max())
    assert gap <= 1e-5 * max(1.0, float(ref_acts.abs().max())), f"scidl's neuron activations are off by {gap}"
    ours, theirs = fourier.neuron_freq_fractions(acts), ref.neuron_fraction_explained(ref_acts)
    assert ours.shape == theirs.shape == (128, p // 2)
    assert torch.allclose(ours.double(), theirs, atol=1e-5, rtol=0)
    key = circuits.key_freqs(model)
    assert key, "model should have key frequencies, otherwise the comparison is vacuous"
    assert ref.key_freqs_from_neurons(ref_acts) == key


def test_progress_measures_one_row_per_checkpoint(tiny_config, store):
    run = train(tiny_config, store, progress=False)
    pm = progress_measures(run, [1, 2], progress=False)
    assert list(pm.step) == run.checkpoint_steps
    assert {"train_loss", "test_loss", "restricted_loss", "excluded_loss", "gini_W_E", "gini_W_L",
            "sum_squared_weights"} <= set(pm.columns)
    final = run.metrics.iloc[-1]
    assert pm.train_loss.iloc[-1] == pytest.approx(final.train_loss, rel=1e-5)
    # the shared grid forward changes no value: each measure alone, on its own forward, agrees
    ctx = Context(make_dataset(tiny_config.task), (1, 2), tiny_config.task.op)
    for row in pm.itertuples():
        model = run.load_model(row.step)
        for name, fn in MEASURES.items():
            assert getattr(row, name) == pytest.approx(fn(model, ctx), rel=1e-12, abs=1e-12), (row.step, name)
    with pytest.raises(MeasureError, match="measures"):
        progress_measures(run, [1], measures=("nope",), progress=False)


def _curves():
    """A grokking-shaped run: memorise by 200, circuit forms 200..1400, cleanup 1400..1800."""
    steps = np.arange(0, 2200, 100)
    t = steps / 100
    train = np.where(steps < 200, 4.0, 1e-3)
    test = np.where(steps <= 1400, 15.0, np.maximum(15.0 * 0.05 ** ((steps - 1400) / 100), 1e-4))
    restricted = 4.0 * 0.3 ** t
    excluded = np.where(steps < 300, train, np.minimum(0.5 * t, 9.0))
    ssw = np.where(steps <= 1400, 50.0, np.maximum(50 - 8 * (t - 14), 20.0))
    return pd.DataFrame({"step": steps, "train_loss": train, "test_loss": test, "restricted_loss": restricted,
                         "excluded_loss": excluded, "sum_squared_weights": ssw})


def test_detect_phases_on_known_curves():
    phases = detect_phases(_curves())
    assert phases["memorization_end"] == 200
    assert phases["circuit_formation_end"] == 1400
    assert phases["cleanup_end"] == 1600  # 15 * 0.05^2 = 0.0375 <= 0.01 * 15
    assert phases["phases_ordered"] and phases["restricted_falls"] and phases["excluded_rises"]
    assert phases["excluded_flat_at_memorization"] and phases["weights_fall_in_cleanup"]


def test_phases_not_ordered_when_nothing_generalises():
    pm = _curves().assign(test_loss=15.0)
    phases = detect_phases(pm)
    assert phases["cleanup_end"] is None and phases["phases_ordered"] is False


def test_leads_are_positive_for_early_measures_and_the_null_can_be_negative():
    pm = _curves()
    assert move_step(pm, "restricted_loss", 200) < 1400
    leads = measure_leads(pm, grok_step=1600, start=200)
    assert leads["restricted_loss"] >= 400 and leads["test_loss"] == 0  # test loss moves at the grok step
    null = lead_null(pm, "restricted_loss", 1600, 200, n=200)
    assert (null < 0).any() and np.isfinite(null).all()


def test_accuracy_at_move_is_chance_normalised_and_fails_clearly():
    from scidl.phenomena.grokking.measures import accuracy_at_move, normalized_accuracy
    pm = _curves().assign(test_acc=lambda d: np.clip((d.step - 1000) / 800, 0.0, 1.0) * (1 - 1 / 11) + 1 / 11)
    step = move_step(pm, "excluded_loss", 200)
    expected = normalized_accuracy(float(pm.set_index("step").test_acc[step]), 11)
    assert accuracy_at_move(pm, "excluded_loss", 200, p=11) == pytest.approx(expected)
    assert normalized_accuracy(1 / 11, 11) == 0 and normalized_accuracy(1.0, 11) == 1
    shuffled = accuracy_at_move(pm, "excluded_loss", 200, p=11, shuffles=50)
    assert 0 <= shuffled <= 1
    with pytest.raises(MeasureError, match="start=None"):
        accuracy_at_move(pm, "excluded_loss", None, p=11)
    with pytest.raises(MeasureError, match="non-finite"):
        move_step(pm.assign(excluded_loss=np.nan), "excluded_loss", 200)
