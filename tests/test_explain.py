"""scidl.explain: the faithfulness scale, grokking's and addition's explanations on trained models,
and their random-mechanism controls."""
from __future__ import annotations

import math

import pytest

import scidl
from scidl.errors import ScidlError
from scidl.explain import faithfulness


def test_faithfulness_scale():
    assert faithfulness(0.1, 0.1, 2.0) == 1.0
    assert faithfulness(2.0, 0.1, 2.0) == 0.0
    assert faithfulness(1.05, 0.1, 2.0) == pytest.approx(0.5)
    assert faithfulness(3.0, 0.1, 2.0) < 0  # worse than chance
    with pytest.raises(ScidlError, match="no better than chance"):
        faithfulness(1.0, 2.0, 2.0)
    with pytest.raises(ScidlError, match="loss=nan"):
        faithfulness(math.nan, 0.1, 2.0)


@pytest.fixture(scope="module")
def grokked(tmp_path_factory):
    cfg = scidl.make_config(p=31, d_model=64, n_heads=4, d_mlp=256, frac_train=0.7, lr=3e-3, steps=1200,
                            eval_every=100, checkpoint_every=0)
    return scidl.train(cfg, store=scidl.RunStore(tmp_path_factory.mktemp("runs")))


def test_explain_grokking_names_the_fourier_parts_and_beats_random(grokked):
    assert grokked.metrics.test_acc.iloc[-1] > 0.99  # the fixture grokked
    e = scidl.explain(grokked)
    assert e.kind == "grokking" and e.run == grokked.hash and 0 < e.seconds < 60
    assert e.score > 0.8 and e.beats_random(), e.text()
    f = e.faithfulness
    assert len(f["random_scores"]) == 5 and all(len(r) == len(f["mechanism"]) and not set(r) & set(f["mechanism"])
                                                 for r in f["random_freqs"])
    assert {"W_E (embedding)", "MLP neurons", "W_L (neurons -> logits)", "logits"} <= set(e.parts.component)
    assert any(c.startswith("blocks.0.attn head") for c in e.parts.component)
    text = e.text()
    assert "faithfulness" in text and "key frequencies" in text
    assert e._repr_markdown_().count("\n\n- ") == len(e.claims) + 1


def test_explain_refuses_what_it_cannot_explain(tmp_path, grokked):
    with pytest.raises(ScidlError, match="run="):
        scidl.explain("not a run")
    store = scidl.RunStore(tmp_path / "runs")
    untrained = scidl.train(scidl.make_config(p=31, d_model=32, n_heads=4, d_mlp=64, steps=1, eval_every=1,
                                              checkpoint_every=0), store=store)
    with pytest.raises(ScidlError, match="no key frequencies|too many|no better than chance"):
        scidl.explain(untrained)
    mul = scidl.train(scidl.make_config(op="mul", p=31, d_model=32, n_heads=4, d_mlp=64, steps=1, eval_every=1,
                                        checkpoint_every=0), store=store)
    with pytest.raises(ScidlError, match="op='mul'"):
        scidl.explain(mul)
    with pytest.raises(ScidlError, match="n_random=0"):
        scidl.explain(grokked, n_random=0)


def test_explain_addition_names_digit_heads_and_the_carry(tmp_path):
    cfg = scidl.make_config(kind="addition", d_model=32, n_heads=4, d_mlp=128, lr=3e-3, weight_decay=0.1,
                            batch_size=128, steps=400, frac_train=0.5, eval_every=100, checkpoint_every=0)
    run = scidl.train(cfg, store=scidl.RunStore(tmp_path / "runs"))
    e = scidl.explain(run, n_random=3)
    f = e.faithfulness
    assert e.kind == "addition" and len(f["random_scores"]) == 3
    assert 1 <= len(f["mechanism"]) < 12 and all(len(r) == len(f["mechanism"]) for r in f["random_cells"])
    assert f["full_loss"] < f["chance_loss"] and math.isfinite(e.score)
    assert sum(e.parts.role.str.startswith("reads column")) == 3
    assert e.parts.role.str.contains("carry").sum() == 1
