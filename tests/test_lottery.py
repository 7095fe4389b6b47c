"""Lottery tickets: MNIST-1D made locally, exact masks, planted pruning answers, the controls, the chain
as stored runs, linear mode connectivity, receptive-field locality and the winning-ticket definition."""
import hashlib
import random

import numpy as np
import pytest
import torch

import scidl
from scidl import masks
from scidl.config import ConfigError
from scidl.errors import ScidlError
from scidl.phenomena.lottery import definition, imp
from scidl.phenomena.lottery.task import LotteryTask, input_permutation, make_dataset
from scidl.store import RunStore, StoreError

SMALL = dict(kind="lottery", arch="mlp", hidden=(32, 16), n_samples=1000, lr=3e-3, weight_decay=0.1, beta2=0.999,
             warmup_steps=0, batch_size=50, steps=60, eval_every=20, checkpoint_every=0, checkpoint_steps=(20,))


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- data

def test_mnist1d_is_generated_locally_at_its_defaults_and_leaves_global_generators_alone(monkeypatch):
    import requests

    monkeypatch.setattr(requests, "get", lambda *a, **k: pytest.fail("MNIST-1D must never be downloaded"))
    from scidl.phenomena.lottery import task as lottery_task

    lottery_task._cached.cache_clear()  # generate here, not from another test's cache
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    data = make_dataset(LotteryTask())
    assert data.tokens.shape == (5000, 40) and int(data.is_train.sum()) == 4000
    assert (np.random.get_state()[1] == before[0]).all() and random.getstate() == before[1]
    assert sorted(data.labels.unique().tolist()) == list(range(10))
    again = make_dataset(LotteryTask())
    assert torch.equal(again.tokens, data.tokens) and torch.equal(again.labels, data.labels)
    assert not torch.equal(make_dataset(LotteryTask(data_seed=1)).tokens, data.tokens)


def test_the_input_permutation_permutes_features_and_nothing_else():
    plain, permuted = make_dataset(LotteryTask(n_samples=500)), make_dataset(LotteryTask(n_samples=500, permute_seed=3))
    perm = input_permutation(40, 3)
    assert not torch.equal(perm, torch.arange(40)) and torch.equal(permuted.permutation, perm)
    assert torch.equal(permuted.tokens, plain.tokens[:, perm])
    assert torch.equal(permuted.labels, plain.labels) and torch.equal(permuted.is_train, plain.is_train)
    assert torch.equal(plain.permutation, torch.arange(40))


def test_digits_are_the_second_data_set():
    data = make_dataset(LotteryTask(dataset="digits", data_seed=0))
    assert data.tokens.shape == (1797, 64) and int(data.is_train.sum()) == int(1797 * 0.8)


@pytest.mark.parametrize("field, value, named", [
    ("dataset", "mnist", "LotteryTask.dataset='mnist'"), ("frac_train", 1.0, "frac_train=1.0"),
    ("n_samples", 5, "n_samples=5"), ("permute_seed", -2, "permute_seed=-2"),
    ("shuffle_seq", 1, "shuffle_seq=1"), ("iid_noise_scale", float("nan"), "iid_noise_scale=nan")])
def test_bad_task_fields_are_refused(field, value, named):
    with pytest.raises(ScidlError, match=named.replace("(", r"\(").replace(".", r"\.")):
        LotteryTask(**{field: value})


# ---------------------------------------------------------------- masks: planted answers

def _planted_state(seed=0):
    """Weights whose large entries are exactly a chosen subset: magnitudes 10 + u there, u elsewhere."""
    g = torch.Generator().manual_seed(seed)
    state, keep = {}, {}
    for name, shape, k in (("fc0.weight", (6, 10), 15), ("fc1.weight", (4, 6), 6), ("fc2.weight", (3, 4), 9)):
        n = shape[0] * shape[1]
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[torch.randperm(n, generator=g)[:k]] = True
        w = torch.rand(n, generator=g) + 10 * chosen
        w = w * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # signs do not matter
        state[name], keep[name] = w.reshape(shape), chosen.reshape(shape)
    state["fc0.bias"] = torch.randn(6, generator=g)
    return state, keep


def test_magnitude_pruning_finds_the_planted_subset_layer_by_layer():
    state, keep = _planted_state()
    # fc0 keeps 15 of 60 (prune 0.75), fc1 6 of 24 (0.75); the output layer prunes half the rate: 9 of 12 kept
    mask = masks.magnitude_mask(state, None, 0.75, "layer", output_factor=1 / 3)
    assert set(mask) == {"fc0.weight", "fc1.weight", "fc2.weight"}  # biases are never pruned
    for name in mask:
        assert torch.equal(mask[name], keep[name]), name


def test_global_pruning_and_a_previous_mask():
    state, keep = _planted_state()
    n_keep = sum(int(k.sum()) for k in keep.values())
    total = sum(k.numel() for k in keep.values())
    mask = masks.magnitude_mask(state, None, (total - n_keep) / total, "global")
    assert all(torch.equal(mask[n], keep[n]) for n in mask)
    # a second round prunes only among the survivors: what was off stays off
    again = masks.magnitude_mask(state, mask, 0.5, "layer", output_factor=1.0)
    for n in mask:
        assert not (again[n] & ~mask[n]).any() and int(again[n].sum()) == int(mask[n].sum()) - round(0.5 * int(mask[n].sum()))


def test_controls_keep_each_layers_density_and_shuffle_keeps_each_units_fan_in():
    state, keep = _planted_state()
    rnd, shf = masks.control_mask(keep, "random", 1), masks.control_mask(keep, "shuffle", 1)
    for n, m in keep.items():
        assert int(rnd[n].sum()) == int(shf[n].sum()) == int(m.sum())
        assert torch.equal(shf[n].sum(1), m.sum(1))  # per output unit
        assert not torch.equal(rnd[n], m) and not torch.equal(shf[n], m)
    assert all(torch.equal(a, b) for a, b in zip(rnd.values(), masks.control_mask(keep, "random", 1).values()))
    assert masks.control_mask(keep, "none", 1) is keep


@pytest.mark.parametrize("call, named", [
    (lambda s, k: masks.magnitude_mask(s, None, 0.0), "prune_rate=0.0"),
    (lambda s, k: masks.magnitude_mask(s, None, 1.0), "prune_rate=1.0"),
    (lambda s, k: masks.magnitude_mask(s, None, 0.5, "rows"), "prune_scope='rows'"),
    (lambda s, k: masks.magnitude_mask(s, {**k, "fc0.weight": k["fc0.weight"][:, :5]}, 0.5), "previous['fc0.weight']"),
    (lambda s, k: masks.magnitude_mask(s, {"fc0.weight": k["fc0.weight"]}, 0.5), "previous with keys"),
    (lambda s, k: masks.control_mask(k, "flip", 0), "mask_control='flip'"),
])
def test_bad_masks_are_refused_naming_them(call, named):
    state, keep = _planted_state()
    with pytest.raises(masks.MaskError, match=named.replace("[", r"\[").replace("(", r"\(")):
        call(state, keep)


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("fields, named", [
    (dict(mask_from="a" * 12, prune_rate=0.0), "prune_rate=0.0"),
    (dict(mask_from="a" * 12, prune_rate=1.0), "prune_rate=1.0"),
    (dict(mask_from="a" * 12, prune_rate=0.6, prune_output_factor=2.0), "prune_output_factor=2.0"),
    (dict(prune_rate=0.2), "prune_rate=0.2 is not allowed: needs mask_from"),
    (dict(mask_control="random"), "mask_control='random' is not allowed: needs mask_from"),
    (dict(init_step=100), "init_step=100 is not allowed: needs init_from"),
    (dict(init_from="nope"), "init_from='nope'"),
    (dict(mask_from="a" * 12, prune_rate=0.2, mask_control="flip"), "mask_control='flip'"),
    (dict(hidden=(0,)), "hidden=(0,)"),
])
def test_bad_pruning_fields_fail_in_the_config(fields, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        scidl.make_config(**{**SMALL, **fields})


def test_old_runs_keep_their_names():
    assert scidl.make_config().hash == "bb445f68fab4"  # the new fields at their defaults are not hashed
    assert scidl.make_config(kind="addition").hash == "6daff29eee8f"


# ---------------------------------------------------------------- the chain as runs

@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("lottery") / "runs")
    dense = scidl.make_config(**SMALL)
    runs = {"dense": scidl.train(dense, store, progress=False)}
    configs = imp.imp_configs(dense, 2, rate=0.5, rewind_step=20)
    for i, c in enumerate(configs, 1):
        runs[f"round{i}"] = scidl.train(c, store, progress=False)
    for name, c in imp.control_configs(configs[-1], dense).items():
        runs[name] = scidl.train(c, store, progress=False)
    return store, dense, configs, runs


def test_each_round_names_its_parents_and_rewinds(chain):
    store, dense, configs, runs = chain
    assert configs[0].train.mask_from == dense.hash and configs[1].train.mask_from == configs[0].hash
    assert all(c.train.init_from == dense.hash and c.train.init_step == 20 for c in configs)
    assert configs[0].train.steps == dense.train.steps - 20
    first = runs["round1"].load_state(0)
    rewound = runs["dense"].load_state(20)
    m = runs["round1"].mask
    for n, w in first.items():
        expected = rewound[n] * m[n] if n in m else rewound[n]
        assert torch.equal(w, expected), n  # the survivors start at the dense run's step-20 values


def test_pruned_weights_stay_exactly_zero_through_adamw_with_weight_decay(chain):
    store, dense, configs, runs = chain
    for name in ("round1", "round2", "reinit", "random", "shuffle"):
        run = runs[name]
        mask = run.mask
        for step in run.checkpoint_steps:
            state = run.load_state(step)
            for n, m in mask.items():
                assert not state[n][~m].any(), f"{name} step {step}: a pruned weight of {n} moved"
                assert state[n][m].count_nonzero() == m.sum(), f"{name}: survivors should be nonzero"
        assert run.metrics.density.iloc[-1] == pytest.approx(masks.density(mask)["total"])
    d1, d2 = masks.density(runs["round1"].mask), masks.density(runs["round2"].mask)
    assert d1["fc0.weight"] == pytest.approx(0.5, abs=0.01) and d2["fc0.weight"] == pytest.approx(0.25, abs=0.01)
    assert d1["fc2.weight"] == pytest.approx(0.75, abs=0.02)  # the output layer at half the rate


def test_controls_have_the_tickets_density_and_differ_where_they_should(chain):
    store, dense, configs, runs = chain
    ticket = runs["round2"].mask
    for name in ("reinit", "random", "shuffle"):
        m = runs[name].mask
        assert {n: int(v.sum()) for n, v in m.items()} == {n: int(v.sum()) for n, v in ticket.items()}
    assert all(torch.equal(runs["reinit"].mask[n], ticket[n]) for n in ticket)
    assert not torch.equal(runs["reinit"].load_state(0)["fc1.weight"] != 0, torch.zeros(1, dtype=torch.bool)) and \
        not torch.equal(runs["reinit"].load_state(0)["fc0.bias"], runs["round2"].load_state(0)["fc0.bias"])  # fresh init


def test_a_rerun_loads_and_a_flipped_mask_byte_is_damage(chain):
    store, dense, configs, runs = chain
    path = runs["round1"].path / masks.MASK_FILE
    assert scidl.train(configs[0], store, progress=False).summary == runs["round1"].summary
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    original = path.read_bytes()
    path.write_bytes(bytes(raw))
    try:
        assert not store.has(configs[0])
        with pytest.raises(StoreError, match="mask.safetensors"):
            store.load(configs[0])
    finally:
        path.write_bytes(original)
    assert store.has(configs[0])


def test_missing_parents_and_rewind_points_are_refused_before_anything_is_written(chain, tmp_path):
    store, dense, configs, runs = chain
    before = _digest(store.root)
    with pytest.raises(masks.MaskError, match=r"mask_from='0{12}' is not allowed: no finished run"):
        scidl.train(configs[0].replace(mask_from="0" * 12), store, progress=False)
    with pytest.raises(masks.MaskError, match="init_step=40 is not allowed: run .* has checkpoints at"):
        scidl.train(configs[0].replace(init_step=40), store, progress=False)
    other = scidl.make_config(**{**SMALL, "hidden": (8,)})
    with pytest.raises(masks.MaskError, match="do not fit this run's model"):
        scidl.train(other.replace(mask_from=dense.hash, prune_rate=0.5), store, progress=False)
    assert _digest(store.root) == before
    with pytest.raises(ScidlError, match="rewind_step=30 is not allowed: the dense run saves no checkpoint"):
        imp.imp_configs(dense, 2, rewind_step=30)


def test_a_pruned_one_hot_mlp_is_not_batched_and_stays_masked(tmp_path):
    """The core's masking serves every phenomenon: a grokking MLP trained under a mask."""
    store = RunStore(tmp_path / "runs")
    dense = scidl.make_config(arch="mlp", act="quadratic", p=23, d_mlp=32, steps=30, eval_every=10,
                              checkpoint_every=0, lr=3e-3)
    scidl.train(dense, store, progress=False)
    pruned = dense.replace(mask_from=dense.hash, prune_rate=0.6, init_from=dense.hash)
    from scidl.ensemble import can_batch

    assert can_batch([dense]) and not can_batch([pruned])
    run = scidl.train(pruned, store, progress=False)
    for n, m in run.mask.items():
        assert not run.load_state()[n][~m].any()


# ---------------------------------------------------------------- connectivity, locality, definition

def test_instability_is_zero_between_a_run_and_itself_and_measures_the_line(chain):
    store, dense, configs, runs = chain
    with pytest.warns(UserWarning, match="identical weights"):  # a barrier of 0 that says nothing is flagged
        same = imp.instability(runs["round1"], runs["round1"], n_points=5)
    assert same["barrier"] == 0.0 and len(set(same["errors"])) == 1
    two = imp.instability(runs["round1"], runs["reinit"], n_points=5)
    assert two["errors"][0] == pytest.approx(1 - runs["round1"].summary["final_test_acc"], abs=1e-6)
    assert two["errors"][-1] == pytest.approx(1 - runs["reinit"].summary["final_test_acc"], abs=1e-6)
    a, b = runs["round1"].load_state(), runs["reinit"].load_state()
    mid = imp.interpolate(a, b, 0.5)
    assert torch.allclose(mid["fc0.weight"], (a["fc0.weight"] + b["fc0.weight"]) / 2)


def test_locality_of_planted_receptive_fields():
    n = 40
    local = torch.zeros(8, n, dtype=torch.bool)
    for i in range(8):
        local[i, 4 * i:4 * i + 4] = True  # four neighbours: mean pairwise distance 5/3
    ends = torch.zeros(8, n, dtype=torch.bool)
    ends[:, :2] = ends[:, -2:] = True
    assert imp.locality(local)["ratio"] == pytest.approx(((n + 1) / 3) / (5 / 3))
    assert imp.locality(ends)["ratio"] < 1
    g = torch.Generator().manual_seed(0)
    rnd = torch.stack([torch.randperm(n, generator=g)[:6] for _ in range(4000)])
    rmask = torch.zeros(4000, n, dtype=torch.bool).scatter_(1, rnd, True)
    assert imp.locality(rmask)["ratio"] == pytest.approx(1.0, abs=0.02)  # the exact null, (n + 1) / 3
    perm = input_permutation(n, 5)
    # a field local in the original order is read through the permutation that placed its columns
    permuted = local[:, perm]  # column j of the permuted input is original feature perm[j]
    assert imp.locality(permuted, order=perm)["ratio"] == pytest.approx(imp.locality(local)["ratio"])
    assert imp.locality(permuted)["ratio"] < 2


def test_winning_needs_both_the_dense_match_and_the_controls_beaten():
    dense = [0.62, 0.63, 0.61, 0.62]
    ticket = [0.62, 0.625, 0.615, 0.63]
    low = [0.50, 0.52, 0.49, 0.51]
    w = definition.winning(ticket, dense, {"reinit": low, "random": low}, margin=0.02)
    assert w["matches"] and w["wins"] and all(w["beats"].values())
    assert not definition.winning(ticket, dense, {"reinit": ticket}, margin=0.02)["wins"]  # a control it ties
    assert not definition.winning([0.5, 0.51, 0.49, 0.5], dense, {"reinit": low}, margin=0.02)["matches"]
    with pytest.raises(ScidlError, match="ticket="):
        definition.winning([0.6], dense, {"reinit": low})


@pytest.mark.parametrize("call, named", [
    (lambda d: imp.imp_configs(d, 0), "rounds=0"),
    (lambda d: imp.imp_configs(d, 2, rate=1.0), "prune_rate=1.0"),
    (lambda d: imp.imp_configs(d, 2, rewind_step=60), "rewind_step=60"),
    (lambda d: imp.imp_configs(None, 2), "dense=None"),
    (lambda d: imp.imp_configs(d.replace(mask_from="a" * 12, prune_rate=0.5), 2), "is itself pruned"),
    (lambda d: imp.control_configs(d, d), "ticket="),
    (lambda d: imp.locality(torch.ones(3, 4)), "mask="),
    (lambda d: imp.locality(torch.ones(3, 4, dtype=torch.bool), order=torch.tensor([0, 1, 1, 2])), "order="),
    (lambda d: imp.instability(None, None), "run_a=None"),
    (lambda d: imp.rounds_density(0.0, 2), "rate=0.0"),
])
def test_bad_lottery_inputs_are_refused_naming_them(call, named):
    with pytest.raises(ScidlError, match=named.replace("(", r"\(")):
        call(scidl.make_config(**SMALL))


def test_rounds_density_is_the_layerwise_schedule():
    assert imp.rounds_density(0.2, 3) == pytest.approx(0.8 ** 3)
    sizes = [40 * 300, 300 * 100, 100 * 10]
    expected = (0.8 ** 2 * (sizes[0] + sizes[1]) + 0.9 ** 2 * sizes[2]) / sum(sizes)
    assert imp.rounds_density(0.2, 2, 0.5, sizes) == pytest.approx(expected)


def test_the_reinit_control_changes_the_init_and_keeps_the_data_order(chain):
    store, dense, configs, runs = chain
    reinit = imp.control_configs(configs[-1], dense)["reinit"]
    assert reinit.train.seed == configs[-1].train.seed and reinit.train.init_seed not in (-1, dense.train.seed)
    assert reinit.train.init_from == "" and reinit.train.mask_from == configs[-1].train.mask_from
    with pytest.raises(ConfigError, match="init_seed=3 is not allowed: must be -1 when init_from"):
        configs[0].replace(init_seed=3)


def test_a_transformers_output_layer_is_its_unembedding():
    model = scidl.make_model(scidl.make_config(p=23, d_model=32, n_heads=4, d_mlp=64).model,
                             scidl.make_config(p=23).task)
    state = {n: p.detach() for n, p in model.named_parameters()}
    assert masks.output_weight(model) == "W_U"
    mask = masks.magnitude_mask(state, None, 0.2, "layer", 0.5, output=masks.output_weight(model))
    d = masks.density(mask)
    assert d["W_U"] == pytest.approx(0.9, abs=0.01) and d["blocks.0.mlp.W_out"] == pytest.approx(0.8, abs=0.01)


def test_rounds_drop_dense_checkpoints_past_their_shorter_budget():
    dense = scidl.make_config(**{**SMALL, "checkpoint_steps": (20, 55)})
    rounds = imp.imp_configs(dense, 2, rewind_step=20)
    assert all(c.train.steps == 40 and c.train.checkpoint_steps == (20,) for c in rounds)


def test_scopes_written_before_the_pruning_fields_keep_their_content_hash():
    """04's H0, as registered before the pruning fields existed (its printed content hash is committed)."""
    from scidl.hypotheses import Hypothesis, scope_of

    evidence = scidl.make_config(p=59, frac_train=0.5, steps=2500)
    scope = scope_of(evidence)
    assert not any(k.startswith(("train.init", "train.mask", "train.prune")) for k in scope)
    assert "train.batch_size" in scope  # older than scopes: kept, as it always was
    h0 = Hypothesis(id="H0", scope=scope, statistic="proportion", comparison=">", threshold=0.5,
                    claim="Grokking is the typical outcome of the fresh-seed config within its step budget.",
                    measurement="1 if the run's test accuracy reaches 0.99 within the budget, else 0, per fresh seed; "
                                "Clopper-Pearson interval",
                    falsifier="the 95% interval of the grok fraction reaches 0.5 or less")
    assert h0.content_hash == "5f24eea77716e810"
    pruned = scope_of(evidence.replace(mask_from="a" * 12, prune_rate=0.2))
    assert pruned["train.mask_from"] == "a" * 12 and pruned["train.prune_rate"] == 0.2
