"""scidl.scoring: AUROC, counted passes, Q3 localization under a budget against exhaustive ablation."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

import scidl
from scidl import scoring
from scidl.errors import ScidlError
from scidl.phenomena.grokking import circuits, zoom


def test_auroc_matches_pair_counting():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 40).astype(float), rng.random(40) < 0.4
    pairs = [(1.0 if s > t else 0.5 if s == t else 0.0) for s, t in
             itertools.product(scores[labels], scores[~labels])]
    assert scoring.auroc(scores, labels) == pytest.approx(np.mean(pairs))
    with pytest.raises(ScidlError, match="one class"):
        scoring.auroc([1.0, 2.0], [True, True])
    with pytest.raises(ScidlError, match="NaN"):
        scoring.auroc([np.nan, 2.0], [True, False])


def _model(p=23, seed=0):
    cfg = scidl.make_config(p=p, d_model=32, n_heads=4, d_mlp=64)
    return scidl.make_model(cfg.model, cfg.task, seed=seed)


def test_pass_counter_counts_forwards_and_backwards():
    model = _model()
    x = circuits.all_tokens(23)[:10]
    with scoring.PassCounter(model) as passes:
        model(x)
        model.run_with_hooks(x, fwd_hooks=[])
        _, cache = model.run_with_cache(x)
        with torch.enable_grad():
            model(x).sum().backward()
    assert (passes.forward, passes.backward) == (4, 1)
    model(x)  # after the block: not counted
    assert passes.forward == 4
    with pytest.raises(ScidlError, match="model="):
        scoring.PassCounter("model")


def _pairs(p, n=128):
    tokens = circuits.all_tokens(p)[torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[:n]]
    corrupt = tokens.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 1) % p  # another b: the answer moves by one
    return tokens, corrupt


def _metric(clean, p):
    right, wrong = (clean[:, 0] + clean[:, 1]) % p, (clean[:, 0] + clean[:, 1] + 1) % p
    idx = torch.arange(len(clean))
    return lambda logits: (logits[:, -1][idx, right] - logits[:, -1][idx, wrong]).mean()


def test_localize_finds_the_only_head_that_writes_and_counts_its_passes():
    """Planted: heads 1-3 write nothing (W_O = 0), so only head 0 can be responsible."""
    p = 23
    model = _model(p)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1:] = 0
    clean, corrupt = _pairs(p)
    heads = [f"blocks.0.attn.hook_z:{h}@2" for h in range(4)]
    found = scoring.localize(model, clean, corrupt, heads, _metric(clean, p), confirm=2)
    assert found.attrs == {"forward": 4, "backward": 1}  # 2 for attribution + 2 confirmations
    assert found.component.iloc[0] == heads[0] and found.confirmed.notna().sum() == 2
    assert (found.set_index("component").loc[heads[1:], "estimate"] == 0).all()
    tokens = circuits.all_tokens(p)
    truth = scoring.exhaustive_ablation(model, tokens, (tokens[:, 0] + tokens[:, 1]) % p, heads)
    assert truth.component.iloc[0] == heads[0] and (truth.effect.iloc[1:] == 0).all()
    s = scoring.localization_scores(found, truth, k=1)
    assert s["topk_recall"] == 1.0 and s["auroc"] == 1.0 and s["n_important"] == 1
    with pytest.raises(ScidlError, match="confirm=9"):
        scoring.localize(model, clean, corrupt, heads, _metric(clean, p), confirm=9)


def test_localize_on_a_grokked_transformer_within_ten_passes(tmp_path):
    cfg = scidl.make_config(p=31, d_model=64, n_heads=4, d_mlp=256, frac_train=0.7, lr=3e-3, steps=1200,
                            eval_every=100, checkpoint_every=0)
    model = scidl.train(cfg, store=scidl.RunStore(tmp_path / "runs")).load_model()
    p = 31
    _, clusters = circuits.neuron_clusters(model)
    groups = {k: torch.nonzero(clusters == k).flatten().tolist() for k in circuits.key_freqs(model)}
    components = zoom.patching_components(model, groups)
    clean, corrupt = _pairs(p)
    found = scoring.localize(model, clean, corrupt, components, _metric(clean, p))
    assert found.attrs["forward"] <= 10 and found.attrs["backward"] == 1
    tokens = circuits.all_tokens(p)
    truth = scoring.exhaustive_ablation(model, tokens, (tokens[:, 0] + tokens[:, 1]) % p, components)
    s = scoring.localization_scores(found, truth, k=3)
    assert 0 <= s["topk_recall"] <= 1 and -1 <= s["spearman"] <= 1
    assert s["topk_recall"] >= 2 / 3, (found, truth)  # the corrupted operand's path is found


def test_localization_scores_bad_input():
    f = pd.DataFrame({"component": ["a", "b"], "score": [1.0, 0.0]})
    t = pd.DataFrame({"component": ["a", "c"], "effect": [1.0, 0.0]})
    with pytest.raises(ScidlError, match="same components"):
        scoring.localization_scores(f, t, k=1)
    with pytest.raises(ScidlError, match="all 0"):
        scoring.localization_scores(f, t.assign(component=["a", "b"], effect=[0.0, 0.0]), k=1)
