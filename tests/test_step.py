"""The fast training loss (scidl.phenomena.grokking.step) is the same function as the plain full forward's loss."""
import pytest
import torch

from scidl.config import make_config
from scidl.registry import make_model
from scidl.phenomena.grokking.step import _PerPairLoss, last_position_loss
from scidl.phenomena.grokking.task import make_dataset
from scidl.train import cross_entropy


def _pair(cfg, seed=0):
    a, b = make_model(cfg.model, cfg.task, seed=seed), make_model(cfg.model, cfg.task, seed=seed)
    return a, b


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("loss_dtype", ["float64", "float32"])
@pytest.mark.parametrize("p,trained", [(23, False), (113, False), (31, True)])
def test_fast_loss_and_gradients_equal_the_full_forward(p, trained, loss_dtype):
    cfg = make_config(p=p, loss_dtype=loss_dtype)
    x, y = make_dataset(cfg.task).train
    plain, fast = _pair(cfg, seed=3)
    if trained:  # away from initialisation: sharp attention, many dead ReLUs
        opt = torch.optim.AdamW(fast.parameters(), lr=3e-3, weight_decay=1.0)
        for _ in range(150):
            opt.zero_grad()
            last_position_loss(fast, x, y, loss_dtype).backward()
            opt.step()
        plain.load_state_dict(fast.state_dict())
        fast.zero_grad(set_to_none=True)
    ref = cross_entropy(plain(x)[:, -1], y, loss_dtype)
    ref.backward()
    got = last_position_loss(fast, x, y, loss_dtype)
    got.backward()
    assert got.dtype == ref.dtype == getattr(torch, loss_dtype)
    assert torch.allclose(got, ref, rtol=1e-5, atol=0)
    g_ref, g_got = _grads(plain), _grads(fast)
    for name in g_ref:
        scale = g_ref[name].abs().max()
        assert scale > 0, name
        assert (g_got[name] - g_ref[name]).abs().max() <= 1e-4 * scale, name


def test_hand_written_backward_passes_gradcheck_in_float64():
    torch.manual_seed(0)
    vocab, n, h, e, d, m, p = 5, 12, 2, 3, 6, 7, 5
    a, b = torch.randint(0, vocab, (n,)), torch.randint(0, vocab, (n,))
    labels = torch.randint(0, p, (n,))
    shapes = [(vocab, h), (vocab, h), (h,), (vocab, h * e), (vocab, h * e), (h * e,), (d,), (h * e, d),
              (d, m), (m,), (m, d), (d,), (d, p)]
    tensors = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    fn = lambda *t: _PerPairLoss.apply(a, b, labels, *t, torch.float64)
    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-7)


def test_hooks_and_other_shapes_take_the_plain_path(monkeypatch):
    cfg = make_config(p=23)
    x, y = make_dataset(cfg.task).train
    model = make_model(cfg.model, cfg.task)
    calls = []
    monkeypatch.setattr(_PerPairLoss, "apply", lambda *a: calls.append(1) or torch.tensor(0.0))
    last_position_loss(model, x, y)
    assert calls == [1]  # the fast path runs when it applies
    seen = []
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, hook: seen.append(act.shape))]):
        loss = last_position_loss(model, x, y)
    assert calls == [1] and seen == [(len(x), 3, cfg.model.d_mlp)] and loss.requires_grad
    for other in (make_config(p=23, n_layers=2), make_config(p=23, act="gelu"), make_config(p=23, arch="mlp")):
        m = make_model(other.model, other.task)
        assert torch.allclose(last_position_loss(m, x, y), cross_entropy(m.last_logits(x), y))
    assert calls == [1]
