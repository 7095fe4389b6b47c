import pytest
import torch
import torch.nn.functional as F

from scidl.config import make_config
from scidl.phenomena.grokking.model import MLP, Transformer, make_model
from scidl.phenomena.grokking.task import make_dataset


def _model(**kw):
    cfg = make_config(**kw)
    return make_model(cfg.model, cfg.task, seed=0), make_dataset(cfg.task)


def _hooks_left(model):
    return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())


@pytest.mark.parametrize("kw", [dict(p=23), dict(p=23, arch="mlp", act="quadratic")])
def test_hooked_forward_equals_plain_forward_and_hooks_are_removed(kw):
    model, ds = _model(**kw)
    plain = model(ds.tokens)
    seen = []
    hooked = model.run_with_hooks(ds.tokens, fwd_hooks=[(lambda n: True, lambda a, hook: seen.append(hook.name))])
    assert torch.equal(plain, hooked)
    assert len(seen) == len(model.hook_dict)
    logits, cache = model.run_with_cache(ds.tokens)
    assert torch.equal(logits, plain)
    assert _hooks_left(model) == 0


def test_transformer_hook_names_follow_transformer_lens():
    model, ds = _model(p=23)
    _, cache = model.run_with_cache(ds.tokens[:4])
    for name in ("hook_embed", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post",
                 "blocks.0.hook_resid_post"):
        assert name in cache
    assert cache["blocks.0.attn.hook_pattern"].shape == (4, 4, 3, 3)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(4, 4, 3))


def test_hooks_can_change_the_output_and_are_removed_after_an_error():
    model, ds = _model(p=23)
    zeroed = model.run_with_hooks(ds.tokens, fwd_hooks=[("blocks.0.mlp.hook_post", lambda a, hook: a * 0)])
    assert not torch.allclose(zeroed, model(ds.tokens))
    with pytest.raises(RuntimeError, match="boom"):
        _raise_in_hook(model, ds)
    assert _hooks_left(model) == 0


def _raise_in_hook(model, ds):
    def boom(act, hook):
        raise RuntimeError("boom")
    model.run_with_hooks(ds.tokens, fwd_hooks=[("hook_embed", boom)])


@pytest.mark.parametrize("init_scale", [0.5, 1.0, 3.0])
def test_fast_last_position_matches_full_forward_values_and_grads(init_scale):
    model, ds = _model(p=31, init_scale=init_scale)
    x, y = ds.train
    fast = model.last_logits(x)
    full = model(x)[:, -1]
    assert torch.allclose(fast, full, atol=1e-5 * init_scale**4, rtol=1e-4)
    g_fast = torch.autograd.grad(F.cross_entropy(fast, y), list(model.parameters()), allow_unused=True)
    g_full = torch.autograd.grad(F.cross_entropy(full, y), list(model.parameters()), allow_unused=True)
    for name, a, b in zip([n for n, _ in model.named_parameters()], g_fast, g_full):
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-4), name


def test_mlp_embedding_bag_matches_one_hot_reference():
    model, ds = _model(p=23, arch="mlp", act="relu")
    one_hot = torch.cat([F.one_hot(ds.tokens[:, 0], 23), F.one_hot(ds.tokens[:, 1], 23)], 1).float()
    reference = F.relu(one_hot @ model.W_in) @ model.W_out
    assert torch.allclose(model(ds.tokens), reference, atol=1e-5)
    assert isinstance(model, MLP)


def test_same_seed_same_init():
    a, _ = _model(p=23)
    b, _ = _model(p=23)
    assert isinstance(a, Transformer)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n


def test_fast_path_falls_back_when_the_last_token_is_not_equals():
    model, ds = _model(p=23)
    odd = ds.tokens[:50].clone()
    odd[:, 2] = 5
    with torch.no_grad():
        assert torch.allclose(model.last_logits(odd), model(odd)[:, -1])


def test_zeroing_any_hook_changes_the_fast_path_output():
    """last_logits falls back to the full forward while hooks are attached, so every hook fires."""
    model, ds = _model(p=23, d_model=32, d_mlp=64)
    base = model.last_logits(ds.tokens)
    for name in model.hook_dict:
        with model.hooks(fwd_hooks=[(name, lambda a, hook: torch.zeros_like(a))]):
            zeroed = model.last_logits(ds.tokens)
        assert not torch.allclose(zeroed, base), name
    assert torch.equal(model.last_logits(ds.tokens), base) and _hooks_left(model) == 0


def test_run_with_cache_is_a_transformer_lens_activation_cache():
    from transformer_lens import ActivationCache
    model, ds = _model(p=23)
    _, cache = model.run_with_cache(ds.tokens[:4])
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["post", 0], cache["blocks.0.mlp.hook_post"])
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])


def test_unknown_hook_names_are_refused_with_the_known_ones():
    from scidl.models import HookError
    model, ds = _model(p=23)
    with pytest.raises(HookError, match=r"hook_nope.*blocks.0.attn.hook_k"):
        model.run_with_cache(ds.tokens[:2], names_filter=["hook_nope"])
    with pytest.raises(HookError, match="hook_nope"):
        model.run_with_hooks(ds.tokens[:2], fwd_hooks=[("hook_nope", lambda a, hook: a)])
