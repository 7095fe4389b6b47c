"""scidl.attacks: FGSM and PGD against planted answers, exact projections, determinism, and foolbox."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scidl import attacks
from scidl.errors import ScidlError


def _digits_model(seed=0, steps=300):
    """A small MLP trained on sklearn's digits (pixels scaled to [0, 1]): (model, x_test, y_test)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    return model, x[1400:1700], y[1400:1700]


@pytest.fixture(scope="module")
def digits():
    return _digits_model()


def test_fgsm_on_a_linear_model_is_the_analytic_sign_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64)
    model = lambda x: x @ w.T  # noqa: E731 - a linear classifier, its gradient by hand below
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    grad = (torch.softmax(x @ w.T, -1) - torch.nn.functional.one_hot(y, 3)) @ w  # d CE / d x, per row
    adv = attacks.perturb(model, x, y, attacks.fgsm(0.3))
    assert torch.allclose(adv, x + 0.3 * grad.sign())
    l2 = attacks.perturb(model, x, y, attacks.fgsm(0.3, norm="l2"))
    assert torch.allclose(l2, x + 0.3 * grad / grad.norm(dim=1, keepdim=True))
    target = attacks.next_class(y, 3)
    grad_t = (torch.softmax(x @ w.T, -1) - torch.nn.functional.one_hot(target, 3)) @ w
    assert torch.allclose(attacks.perturb(model, x, y, attacks.fgsm(0.3, targeted=True), target=target),
                          x - 0.3 * grad_t.sign())  # a targeted step descends the target's loss


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("random_start, targeted", [(False, False), (True, False), (True, True)])
def test_every_perturbation_is_inside_the_ball_and_the_range(digits, norm, eps, random_start, targeted):
    model, x, y = digits
    a = attacks.pgd(eps, steps=7, norm=norm, random_start=random_start, targeted=targeted, seed=3)
    adv = attacks.perturb(model, x, y, a, bounds=(0.0, 1.0), target=attacks.next_class(y) if targeted else None)
    assert bool((attacks.norms(adv - x, norm) <= eps * (1 + 1e-6)).all())
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert bool((adv != x).any())


def test_pgd_is_deterministic_under_its_seed_and_the_model_is_left_as_it_was(digits):
    model, x, y = digits
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]  # left over from training: an attack adds nothing
    model.train()
    a = attacks.pgd(0.1, steps=5, seed=11)
    first, again = attacks.perturb(model, x, y, a), attacks.perturb(model, x, y, a)
    assert torch.equal(first, again)
    assert not torch.equal(first, attacks.perturb(model, x, y, attacks.pgd(0.1, steps=5, seed=12)))
    assert model.training and all(p.requires_grad and torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_pgd_fools_more_than_fgsm_and_the_worst_case_is_pointwise(digits):
    model, x, y = digits
    runs = [attacks.fgsm(0.1), attacks.pgd(0.1, steps=20, seed=0), attacks.pgd(1.0, steps=20, norm="l2", seed=0)]
    r = attacks.robust_accuracy(model, x, y, runs, bounds=(0.0, 1.0))
    assert r["clean"] > 0.85  # the model learned digits, so there is something to attack
    fgsm_acc, pgd_acc, _ = r["by_attack"].values()
    assert pgd_acc <= fgsm_acc  # more steps from the same budget
    ok = attacks.predictions(model, x) == y
    for a in runs:  # recomputed apart: robust only where no attack succeeded
        ok &= attacks.predictions(model, attacks.perturb(model, x, y, a, (0.0, 1.0))) == y
    assert r["worst"] == pytest.approx(float(ok.double().mean()))
    assert r["worst"] <= min(r["by_attack"].values())


@pytest.mark.parametrize("norm, eps, steps", [("linf", 0.05, 1), ("linf", 0.05, 10), ("l2", 0.5, 10)])
def test_our_attacks_agree_with_foolbox(digits, norm, eps, steps):
    fb = pytest.importorskip("foolbox")
    model, x, y = digits
    fmodel = fb.PyTorchModel(model.eval(), bounds=(0.0, 1.0))
    size = eps if steps == 1 else 2.5 * eps / steps
    attack = (fb.attacks.LinfPGD if norm == "linf" else fb.attacks.L2PGD)(abs_stepsize=size, steps=steps,
                                                                            random_start=False)
    _, theirs, success = attack(fmodel, x, y, epsilons=eps)
    ours = attacks.perturb(model, x, y, attacks.pgd(eps, steps, norm, step_size=size, random_start=False), (0.0, 1.0))
    our_success = attacks.predictions(model, ours) != y
    gap = float(our_success.double().mean() - success.double().mean())
    print(f"{norm} eps={eps} steps={steps}: success ours {float(our_success.double().mean()):.3f}, "
          f"foolbox {float(success.double().mean()):.3f}, agree on {float((our_success == success).double().mean()):.3f}")
    assert abs(gap) <= 0.02  # the same algorithm: any gap is float rounding near the decision boundary
    assert float((our_success == success).double().mean()) >= 0.97
    assert float((ours - theirs).abs().max()) <= eps * 2 + 1e-6


@pytest.mark.parametrize("call, named", [
    (lambda: attacks.Attack(norm="l1"), "norm"),
    (lambda: attacks.pgd(-0.1), "eps"),
    (lambda: attacks.pgd(0.1, steps=0), "steps"),
    (lambda: attacks.Attack(targeted=1), "targeted"),
])
def test_bad_attack_settings_are_refused(call, named):
    with pytest.raises(ScidlError, match=named):
        call()


def test_bad_batches_are_refused_naming_them(digits):
    model, x, y = digits
    a = attacks.fgsm(0.1)
    for kwargs, named in ((dict(x=x.long()), "x="), (dict(y=y.float()), "y="), (dict(y=y[:3]), "y="),
                          (dict(bounds=(1.0, 0.0)), "bounds"), (dict(bounds=(0.2, 1.0)), "outside bounds")):
        args = dict(x=x, y=y, bounds=None) | kwargs
        with pytest.raises(ScidlError, match=named):
            attacks.perturb(model, args["x"], args["y"], a, args["bounds"])
    with pytest.raises(ScidlError, match="target"):
        attacks.perturb(model, x, y, attacks.fgsm(0.1, targeted=True))
    with pytest.raises(ScidlError, match="attacks"):
        attacks.robust_accuracy(model, x, y, a)
    assert np.isfinite(attacks.robust_accuracy(model, x, y, [a])["worst"])


# -- adversarial training: an option of every run with float inputs --

def _digits_config(**fields):
    import scidl

    return scidl.make_config(kind="lottery", dataset="digits", data_seed=0, hidden=(64,), lr=3e-3, weight_decay=0.0,
                             beta2=0.999, warmup_steps=0, batch_size=64, steps=400, eval_every=100,
                             checkpoint_every=0, **fields)


@pytest.mark.parametrize("seed", [1, 2])
def test_adversarial_training_buys_robustness_at_its_eps(tmp_path, seed):
    import scidl
    from scidl.store import RunStore

    store = RunStore(tmp_path / "runs")
    data = scidl.make_dataset(_digits_config().task)
    x, y = data.test
    bounds = (float(data.tokens.min()), float(data.tokens.max()))
    worst = {}
    for eps in (0.0, 0.4):
        run = scidl.train(_digits_config(seed=seed, adv_eps=eps), store, progress=False)
        r = attacks.robust_accuracy(run.load_model(), x, y, [attacks.pgd(0.4, 10, seed=0)], bounds=bounds)
        assert r["clean"] > 0.9
        worst[eps] = r["worst"]
    assert worst[0.4] > worst[0.0] + 0.2  # Madry et al.: PGD training is what makes a net robust to PGD


def test_adversarial_runs_are_named_apart_deterministic_and_refused_on_tokens(tmp_path):
    import scidl
    from scidl.config import ConfigError
    from scidl.ensemble import can_batch
    from scidl.store import RunStore

    plain, robust = _digits_config(), _digits_config(adv_eps=0.1)
    assert plain.hash != robust.hash  # (test_lottery pins old runs' names: the fields at their defaults are not hashed)
    store = RunStore(tmp_path / "runs")
    a = scidl.train(robust.replace(steps=30), store, progress=False).load_state()
    b = scidl.train(robust.replace(steps=30), RunStore(tmp_path / "again"), progress=False).load_state()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the random starts are seeded by the run's seed and step
    grok = scidl.make_config(p=7, steps=5, adv_eps=0.1)
    with pytest.raises(ConfigError, match="adv_eps=0.1 .*tokens"):
        scidl.train(grok, store, progress=False)
    assert not (store.root / grok.hash).exists()
    assert not can_batch([scidl.make_config(arch="mlp", act="quadratic", d_mlp=16, p=7, adv_eps=0.1)])
    for fields, named in ((dict(adv_eps=-0.1), "adv_eps"), (dict(adv_norm="l2"), "adv_norm"),
                          (dict(adv_eps=0.1, adv_norm="l1"), "adv_norm"), (dict(adv_eps=0.1, adv_steps=0), "adv_steps")):
        with pytest.raises(ConfigError, match=named):
            _digits_config(**fields)
