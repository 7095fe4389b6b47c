"""scidl.explain: the faithfulness scale, grokking's and addition's explanations on trained models,
and their random-mechanism controls."""
from __future__ import annotations

import math

import pytest
import torch

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


def test_explain_grokking_names_the_fourier_parts_and_beats_random(grokked):
    assert grokked.metrics.test_acc.iloc[-1] > 0.99  # the fixture grokked
    e = scidl.explain(grokked)
    assert e.kind == "grokking" and e.run == grokked.hash and 0 < e.seconds < 60
    assert e.score > 0.8 and e.beats_random(), e.text()
    f = e.faithfulness
    n_freqs = (31 - 1) // 2
    assert len(f["random_scores"]) == 20 and all(len(r) == len(f["mechanism"]) and set(r) <= set(range(1, n_freqs + 1))
                                                  for r in f["random_freqs"])
    # drawn from all frequencies, the mechanism's included: a random set can share (and so win) with it
    assert any(set(r) & set(f["mechanism"]) for r in f["random_freqs"])
    # the score is an intervention inside the network, recomputed here from the test pairs: the embedding
    # keeps only the key frequencies, the rest of the model runs as trained
    from scidl.phenomena.grokking import zoom
    from scidl.phenomena.grokking.task import make_dataset

    tokens, labels = make_dataset(grokked.config.task).test
    model = grokked.load_model()
    restricted = zoom.with_embedding_freqs(model, f["mechanism"], keep=True)
    with torch.no_grad():
        full, kept = (float(torch.nn.functional.cross_entropy(m(tokens)[:, -1].double(), labels))
                      for m in (model, restricted))
    assert f["score"] == pytest.approx(faithfulness(kept, full, math.log(31)), rel=1e-6)
    assert "logit_projection_score" in f and "oracle_score" in f and len(f["oracle"]) == len(f["mechanism"])
    assert {"W_E (embedding)", "MLP neurons", "W_L (neurons -> logits)", "logits"} <= set(e.parts.component)
    assert any(c.startswith("blocks.0.attn head") for c in e.parts.component)
    text = e.text()
    assert "faithfulness" in text and "key frequencies" in text
    assert e._repr_markdown_().count("\n\n- ") == len(e.claims) + 4  # faithfulness, intervention, oracle, projection


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
