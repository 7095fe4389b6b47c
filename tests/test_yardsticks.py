"""scidl.yardsticks: budgets counted from hand-over (an over-budget method is scored as over), Q3 on a
planted answer, the held-out truth, the baselines, Q4's scoring over models."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

import scidl
from scidl.errors import ScidlError
from scidl.phenomena.grokking import circuits
from scidl.phenomena.grokking.zoom import q3_task
from scidl.yardsticks import protocol, q3, q4


def _model(p=23, seed=0, d_mlp=64):
    cfg = scidl.make_config(p=p, d_model=32, n_heads=4, d_mlp=d_mlp)
    return scidl.make_model(cfg.model, cfg.task, seed=seed)


def test_auroc_matches_pair_counting():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 40).astype(float), rng.random(40) < 0.4
    pairs = [(1.0 if s > t else 0.5 if s == t else 0.0) for s, t in
             itertools.product(scores[labels], scores[~labels])]
    assert protocol.auroc(scores, labels) == pytest.approx(np.mean(pairs))
    with pytest.raises(ScidlError, match="one class"):
        protocol.auroc([1.0, 2.0], [True, True])
    with pytest.raises(ScidlError, match=r"scores\[0\]=nan is not allowed: must be a finite number"):
        protocol.auroc([np.nan, 2.0], [True, False])


def test_meter_counts_every_entry_rows_backwards_and_flops():
    model = _model()
    x = circuits.all_tokens(23)[:10]
    with protocol.Meter(model) as m:
        model(x)
        model.run_with_hooks(x, fwd_hooks=[])
        _, cache = model.run_with_cache(x)
        model.last_logits(circuits.all_tokens(23))  # the lookup-table shortcut: no hook point fires, still a pass
        with torch.enable_grad():
            model(x).sum().backward()
    assert (m.forward, m.backward, m.rows) == (5, 1, 10 + 10 + 10 + 529 + 10)
    assert m.flops > 0
    model(x)  # after the block: not counted
    assert m.forward == 5
    # a forward rebuilt by hand from the weights is no pass, but its FLOPs are counted
    with protocol.Meter(model) as hand:
        with torch.no_grad():
            resid = model.W_E[x] + model.W_pos
            resid @ model.W_U
    assert hand.forward == 0 and hand.flops >= 2 * 10 * 3 * 32 * 23
    # a forward assembled from the submodules, or the class's forward called past the instance, still counts
    with protocol.Meter(model) as side:
        with torch.no_grad():
            type(model).forward(model, x)
            model.blocks[0](model.W_E[x] + model.W_pos)
    assert side.forward == 2 and side.rows == 20
    with pytest.raises(ScidlError, match="model="):
        protocol.Meter("model")
    with protocol.Meter(model):
        with pytest.raises(ScidlError, match="already metered"):
            protocol.Meter(model).__enter__()


def test_an_over_budget_method_is_scored_as_over_not_stopped():
    model = _model()
    x = circuits.all_tokens(23)[:64]
    budget = protocol.Budget(forward=10, rows=640)

    def greedy(m):
        for _ in range(11):
            m(x)
        return "done"

    out, usage = protocol.hand_over(greedy, model, )
    assert out == "done" and usage.forward == 11 and usage.rows == 704
    assert not usage.within(budget) and usage.over(budget) == ["forward 11 > 10", "rows 704 > 640"]
    _, wide = protocol.hand_over(lambda m: m(circuits.all_tokens(23)), model)  # one pass of 529 rows
    assert wide.forward == 1 and wide.within(protocol.Budget(forward=10)) and not wide.within(protocol.Budget(10, 256))
    # FLOPs: a backward pass costs two forwards' worth, so one forward + one backward is over a 2-forward FLOP budget

    def one(m):
        with torch.no_grad():
            m(x)
    _, single = protocol.hand_over(one, model)

    def both(m):
        with torch.enable_grad():
            m(x).sum().backward()
    _, fb = protocol.hand_over(both, model)
    assert fb.flops == 3 * single.flops
    assert fb.over(protocol.Budget(forward=10, flops=2 * single.flops)) == [f"flops {fb.flops} > {2 * single.flops}"]
    with pytest.raises(ScidlError, match="forward=-1"):
        protocol.Budget(forward=-1)


def _planted_task(model, p=23, n=128):
    """Heads 1-3 write nothing (W_O = 0) and only the two neurons whose activations vary most write
    (W_out rows): the responsible candidates are exactly head 0 and those two neurons; every other
    effect is exactly 0. Returns (task, the planted set)."""
    tokens = circuits.all_tokens(p)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1:] = 0
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.mlp.hook_post")
        writers = cache["blocks.0.mlp.hook_post"][:, 2].std(0).argsort(descending=True)[:2].tolist()
        keep = torch.zeros(model.cfg.d_mlp, dtype=torch.bool)
        keep[writers] = True
        model.blocks[0].mlp.W_out[~keep] = 0
    planted = {"blocks.0.attn.hook_z:0@2", *(f"blocks.0.mlp.hook_post:{i}@2" for i in writers)}
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(tokens), generator=gen)
    train, test = tokens[perm[:n]], tokens[perm[n:]]
    labels = lambda t: (t[:, 0] + t[:, 1]) % p
    partner = lambda t: t[torch.randperm(len(t), generator=gen)]
    candidates = [f"blocks.0.attn.hook_z:{h}@2" for h in range(4)] + [f"blocks.0.mlp.hook_post:{i}@2"
                                                                      for i in range(model.cfg.d_mlp)]
    return q3.Q3Task(phenomenon="planted", corruption="another pair", candidates=tuple(candidates),
                     excluded={"blocks.0.hook_attn_out@2": "sum of heads"}, clean=train, corrupt=partner(train),
                     labels=labels(train), truth_clean=test, truth_corrupt=partner(test), truth_labels=labels(test),
                     answer_pos=2), planted


def test_q3_finds_a_planted_answer_and_the_baselines_do_not():
    model = _model()
    task, planted = _planted_task(model)
    truth = q3.truth(model, task)
    live = truth[~truth.excluded]
    assert set(live[live.effect != 0].component) == planted  # the plant is the truth
    assert truth[truth.excluded].component.tolist() == ["blocks.0.hook_attn_out@2"]
    budget = q3.budget(model, task, 10)
    assert budget.rows == 10 * task.batch and budget.flops > 0
    table, _ = q3.score_model(model, task, budget, k=3, n_random=10)
    row = table.set_index("method")
    assert row.loc["atp+confirm (scidl)", "topk_recall"] == 1.0 and row.loc["atp+confirm (scidl)", "within_budget"]
    # 2 forwards + 1 backward (two forwards' FLOPs) + 6 confirmations: 10 forwards' FLOPs, 8 passes
    assert row.loc["atp+confirm (scidl)", "forward"] == 8 and row.loc["atp+confirm (scidl)", "backward"] == 1
    assert row.loc["structural", "hits"] == 1  # heads 0-2 first: of them only head 0 is planted
    assert row.loc["structural+confirm", "hits"] == 1 and row.loc["structural+confirm", "within_budget"]
    assert row.loc["structural", "forward"] == 0 and row.loc["random", "topk_recall"] < 0.5
    assert not row.loc["exhaustive (ceiling)", "within_budget"] and row.loc["exhaustive (ceiling)", "topk_recall"] == 1.0
    summary = q3.summarize(table.assign(run="a"), k=3).set_index("method")
    assert summary.loc["atp+confirm (scidl)", "recall"] == 1.0 and summary.loc["exhaustive (ceiling)", "within_budget"] == 0


def test_confirmations_are_exact_patching_and_methods_never_see_the_held_out_pairs():
    model = _model()
    task, _ = _planted_task(model)
    view = task.inputs()
    assert not hasattr(view, "truth_clean") and view.batch == task.batch
    budget = q3.budget(model, task, 10)
    found, usage = protocol.hand_over(q3.atp_confirm, model, view, budget)
    exact, _ = protocol.hand_over(q3.exhaustive, model, view, budget)
    confirmed = found[found.confirmed].set_index("component").score
    assert len(confirmed) == 6 and usage.within(budget)
    assert np.allclose(confirmed, exact.set_index("component").score[confirmed.index], rtol=0, atol=1e-12)


def test_q3_task_rules_and_localization_score_input():
    model = _model()
    task, _ = _planted_task(model)
    with pytest.raises(ScidlError, match="bottleneck"):
        q3.Q3Task(**{**task.__dict__, "excluded": {task.candidates[0]: "x"}})
    with pytest.raises(ScidlError, match="paired"):
        q3.Q3Task(**{**task.__dict__, "corrupt": task.corrupt[:-1]})
    f = pd.DataFrame({"component": ["a", "b"], "score": [1.0, 0.0]})
    t = pd.DataFrame({"component": ["a", "c"], "effect": [1.0, 0.0]})
    with pytest.raises(ScidlError, match="same components"):
        q3.localization_scores(f, t, k=1)
    with pytest.raises(ScidlError, match="all 0"):
        q3.localization_scores(f, t.assign(component=["a", "b"], effect=[0.0, 0.0]), k=1)
    with pytest.raises(ScidlError, match=r"found\['score'\]='nan \(row 0\)' is not allowed: must be finite"):  # a NaN score is refused, never read as a perfect recall
        q3.localization_scores(f.assign(score=[math.nan, 0.0]), t.assign(component=["a", "b"]), k=1)
    with pytest.raises(ScidlError, match="found=.an empty DataFrame. is not allowed"):
        q3.localization_scores(f.iloc[:0], t, k=1)


def test_structural_order_is_position_then_type_then_index():
    comps = ["blocks.0.mlp.hook_post:3@2", "blocks.0.attn.hook_z:1@1", "blocks.0.attn.hook_z:2@2",
             "blocks.0.mlp.hook_post:0@2", "blocks.0.attn.hook_z:0@2"]
    assert q3.structural_order(comps) == ["blocks.0.attn.hook_z:0@2", "blocks.0.attn.hook_z:2@2",
                                          "blocks.0.mlp.hook_post:0@2", "blocks.0.mlp.hook_post:3@2",
                                          "blocks.0.attn.hook_z:1@1"]


def test_grokking_q3_task_holds_its_protocol(grokked):
    task = q3_task(grokked)
    budget = q3.budget(grokked.load_model(), task, 10)
    assert len(task.candidates) >= 5 * budget.forward  # the budget binds
    assert budget.rows == 10 * task.batch == 2560
    seen = {tuple(r) for r in task.clean.tolist()} | {tuple(r) for r in task.corrupt.tolist()}
    held = {tuple(r) for r in task.truth_clean.tolist()} | {tuple(r) for r in task.truth_corrupt.tolist()}
    assert not seen & held  # the truth is computed on pairs no method sees
    assert {"hook_embed@0", "hook_embed@1"} <= set(task.excluded) and not set(task.excluded) & set(task.candidates)
    found, usage = protocol.hand_over(q3.atp_confirm, grokked.load_model(), task.inputs(), budget)
    assert usage.within(budget) and usage.forward == 8 and usage.rows == 2048
    _, over = protocol.hand_over(q3.exhaustive, grokked.load_model(), task.inputs(), budget)
    assert not over.within(budget) and over.forward == 3 + len(task.candidates)


def test_check_seeds():
    assert protocol.check_seeds("seeds", [3, 1, 2]) == [3, 1, 2]
    for bad in ([], [1, 1], [-1], [2**40], "12", [1.5]):
        with pytest.raises(ScidlError, match="seeds"):
            protocol.check_seeds("seeds", bad)
    with pytest.raises(ScidlError, match="at least 5"):
        protocol.check_seeds("seeds", [1, 2], minimum=5)


def test_q4_scores_every_model_and_a_model_without_explanation_fails(grokked, tmp_path):
    untrained = scidl.train(grokked.config.replace(steps=1), store=scidl.RunStore(tmp_path / "runs"))
    rows = [q4.score_model(grokked, 60.0), q4.score_model(untrained, 60.0)]
    assert rows[1]["passed"] is False and math.isnan(rows[1]["faithfulness"])
    table = rows[0]["table"]  # a pass is exactly: in time, >= 80 % of its claims hold, the faithful one among them
    assert rows[0]["claims"] == len(table) and rows[0]["checked"] == table.passed.mean()
    assert rows[0]["passed"] == (rows[0]["within_budget"] and rows[0]["checked"] >= 0.8 and rows[0]["faithful"])
    slow = q4.score_model(grokked, 1e-9)  # no explanation fits in a nanosecond
    assert not slow["within_budget"] and not slow["passed"]
    s = q4.summarize(rows)
    assert s["models"] == 2 and s["passed"]["n"] == 2 and s["passed"]["share"] <= 0.5
    assert s["faithfulness"]["n"] == 1
    with pytest.raises(ScidlError, match="budget_s"):
        q4.score_model(grokked, 0)
    with pytest.raises(ScidlError, match="rows"):
        q4.summarize([])


def test_addition_q3_task_keeps_each_pair_within_its_split(tmp_path):
    from scidl.phenomena.addition.zoom import q3_task as addition_q3_task

    cfg = scidl.make_config(kind="addition", n_digits=2, frac_train=0.5, d_model=16, n_heads=2, d_mlp=32,
                            batch_size=64, steps=1, eval_every=1, checkpoint_every=0)
    run = scidl.train(cfg, store=scidl.RunStore(tmp_path / "runs"))
    task = addition_q3_task(run, n=64)
    data = scidl.make_dataset(cfg.task)
    train = {tuple(t) for t in data.tokens[data.is_train].tolist()}
    assert all(tuple(t) in train for t in torch.cat([task.clean, task.corrupt]).tolist())
    assert not any(tuple(t) in train for t in torch.cat([task.truth_clean, task.truth_corrupt]).tolist())
    assert task.batch == 64 and len(task.candidates) == 2 + 32
    assert {"hook_embed@1", "blocks.0.hook_mlp_out@6"} <= set(task.excluded)
