"""The reference's own forward pass (tests/reference_nanda.grid_forward, from raw checkpoint tensors,
float64, no scidl) agrees with scidl's forward, and a bug planted in scidl's forward (operands
swapped, or b read as a) makes the scidl-vs-reference comparison fail: the reference side of
tests/test_measures.py no longer takes scidl's logits, so it can catch such a bug."""
import pytest
import torch

import reference_nanda as ref
from scidl.config import make_config
from scidl.phenomena.grokking import circuits
from scidl.phenomena.grokking.measures import Context, excluded_loss, restricted_loss
from scidl.phenomena.grokking.task import make_dataset
from scidl.registry import make_model
from scidl.store import RunStore
from scidl.train import train


def _max_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.double() - theirs).abs().max())


def _tol(theirs: torch.Tensor) -> float:
    """scidl runs in float32, the reference in float64: allow float32 rounding of the largest logit."""
    return 1e-5 * max(1.0, float(theirs.abs().max()))


def _swap_ab(tokens):
    return tokens[:, [1, 0, 2]]  # `b a =`: the operands in each other's place


def _b_is_a(tokens):
    return torch.stack([tokens[:, 0], tokens[:, 0], tokens[:, 2]], dim=1)  # `a a =`: b read as a


def _plant(monkeypatch, model, wrong_tokens):
    """Make scidl's grid path (circuits.grid_logits -> model.last_logits) read the wrong operands."""
    last_logits = model.last_logits
    monkeypatch.setattr(model, "last_logits", lambda tokens: last_logits(wrong_tokens(tokens)))


def _trained(tmp_path, op, p=23):
    cfg = make_config(op=op, p=p, d_model=32, n_heads=4, d_mlp=64, frac_train=0.8, lr=1e-2, steps=300,
                      eval_every=100, checkpoint_every=0)
    run = train(cfg, RunStore(tmp_path), progress=False)
    state, config = ref.load_run_checkpoint(run.path)
    assert config["model"]["act"] == cfg.model.act and config["task"]["p"] == p
    logits, acts = ref.grid_forward(state, act=config["model"]["act"])
    return cfg, run.load_model(), logits, acts


@pytest.mark.parametrize("p, act, n_heads, seed", [(7, "relu", 4, 0), (11, "relu", 2, 1), (11, "gelu", 4, 2),
                                                   (7, "quadratic", 1, 3)])
def test_raw_forward_matches_scidl_on_random_models(p, act, n_heads, seed):
    """Random init: logits not symmetric in a and b. Both of scidl's paths (the lookup-table
    last_logits behind grid_logits, and the full hooked forward) and its neuron activations."""
    cfg = make_config(p=p, d_model=16, n_heads=n_heads, d_mlp=32, act=act, init_scale=2.0)
    model = make_model(cfg.model, cfg.task, seed=seed).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    logits, acts = ref.grid_forward(state, act=act)
    assert logits.dtype == acts.dtype == torch.float64
    assert logits.shape == (p, p, p) and acts.shape == (p, p, 32)
    tol = _tol(logits)
    assert _max_diff(circuits.grid_logits(model), logits) < tol
    with torch.no_grad():
        full = model(circuits.all_tokens(p))[:, -1].reshape(p, p, p)
    assert _max_diff(full, logits) < tol
    assert _max_diff(circuits.neuron_acts(model), acts) < 1e-5 * max(1.0, float(acts.abs().max()))
    assert _max_diff(logits.transpose(0, 1), logits) > 100 * tol  # a swap would be visible


def test_raw_forward_refuses_an_architecture_it_does_not_model():
    cfg = make_config(p=7, d_model=16, n_heads=2, d_mlp=32)
    state = dict(make_model(cfg.model, cfg.task).state_dict())
    with pytest.raises(ValueError, match="ln_final"):
        ref.grid_forward({**state, "ln_final.w": torch.ones(16)})
    with pytest.raises(ValueError, match="W_in"):
        ref.grid_forward({k: v for k, v in state.items() if k != "blocks.0.mlp.W_in"})


def test_planted_operand_swap_is_caught_on_a_random_model(monkeypatch):
    p = 11
    cfg = make_config(p=p, d_model=16, n_heads=2, d_mlp=32, init_scale=2.0)
    model = make_model(cfg.model, cfg.task, seed=5).eval()
    logits, _ = ref.grid_forward(model.state_dict())
    tol = _tol(logits)
    assert _max_diff(circuits.grid_logits(model), logits) < tol
    _plant(monkeypatch, model, _swap_ab)
    planted = circuits.grid_logits(model)
    assert _max_diff(planted, logits.transpose(0, 1)) < tol  # the plant is live: a and b exchanged
    assert _max_diff(planted, logits) > 100 * tol


def test_planted_b_is_a_is_caught_by_the_measures_on_a_trained_model(monkeypatch, tmp_path):
    """A trained a+b model's restricted and excluded losses (scidl's measures) against the
    reference's, computed from its own forward: agree untouched, far apart with b read as a."""
    p, op = 23, "add"
    cfg, model, logits, acts = _trained(tmp_path, op, p)
    key = tuple(ref.key_freqs_from_neurons(acts))
    assert key, "model should have key frequencies, otherwise restricted loss is undefined"
    data, labels = make_dataset(cfg.task), ref.grid_labels(p, op)
    ctx, L = Context(data, key, op), logits.flatten(0, 1)
    theirs = [ref.restricted_loss(L, labels, key), ref.excluded_loss(L, labels, data.is_train, key)]
    assert [restricted_loss(model, ctx), excluded_loss(model, ctx)] == pytest.approx(theirs, rel=1e-6)
    _plant(monkeypatch, model, _b_is_a)
    assert _max_diff(circuits.grid_logits(model), logits) > 1.0
    ours = [restricted_loss(model, ctx), excluded_loss(model, ctx)]
    assert abs(ours[0] - theirs[0]) > 1.0 and abs(ours[1] - theirs[1]) > 1.0, (ours, theirs)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_planted_swap_is_caught_on_a_trained_model(op, monkeypatch, tmp_path):
    """a <-> b on a trained model. The logits comparison catches it for both operations. For a+b the
    restricted loss is exactly blind to it (cos/sin(w(a+b)) and the labels are symmetric in a, b),
    which is why the reference must compute its own logits; for a-b the sin terms flip sign and the
    labels change, so restricted and excluded loss move too (key frequencies (1, 2, 5) here: any
    set shows it)."""
    p = 23
    cfg, model, logits, _ = _trained(tmp_path, op, p)
    tol = _tol(logits)
    assert _max_diff(circuits.grid_logits(model), logits) < tol
    data, labels, key = make_dataset(cfg.task), ref.grid_labels(p, op), (1, 2, 5)
    sign = 1 if op == "add" else -1
    L = logits.flatten(0, 1)
    theirs = [ref.restricted_loss(L, labels, key, sign=sign), ref.excluded_loss(L, labels, data.is_train, key, sign=sign)]
    ctx = Context(data, key, op)
    assert [restricted_loss(model, ctx), excluded_loss(model, ctx)] == pytest.approx(theirs, rel=1e-6)
    _plant(monkeypatch, model, _swap_ab)
    assert _max_diff(circuits.grid_logits(model), logits) > 1000 * tol
    ours = [restricted_loss(model, ctx), excluded_loss(model, ctx)]
    if op == "add":
        assert ours[0] == pytest.approx(theirs[0], rel=1e-6)  # blind, as said above
    else:
        assert abs(ours[0] - theirs[0]) > 0.1 and abs(ours[1] - theirs[1]) > 1.0, (ours, theirs)
