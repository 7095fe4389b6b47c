"""The addition plug-in: tokenisation, carry types, definition and zoom views against planted answers."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from scidl.config import ConfigError, RunConfig, make_config
from scidl.errors import ScidlError
from scidl.phenomena.addition import definition, zoom
from scidl.phenomena.addition.task import AdditionTask, carry_types, encode, make_dataset
from scidl.registry import make_model
from scidl.train import minibatches, train


def test_tokens_and_answers_of_a_planted_pair():
    tokens, answer = encode(torch.tensor([19, 7]), torch.tensor([81, 5]), 2)
    assert tokens.tolist() == [[1, 9, 10, 8, 1, 11, 1, 0], [0, 7, 10, 0, 5, 11, 0, 1]]
    assert answer.tolist() == [[1, 0, 0], [0, 1, 2]]  # 100 and 012, carry-out first


def test_carry_types_of_planted_pairs_and_their_counts():
    a, b = torch.tensor([12, 15, 55, 15, 9, 99]), torch.tensor([34, 17, 55, 85, 91, 1])
    assert carry_types(a, b, 2).tolist() == [0, 1, 1, 2, 2, 2]
    data = make_dataset(AdditionTask(n_digits=2, frac_train=0.5))
    counts = torch.bincount(data.carry_type, minlength=3).tolist()
    assert counts == [55 * 55, 10_000 - 55 * 55 - 45 * 10, 45 * 10]  # per column 55 sums <= 9; 45 >= 10, 10 == 9


def test_the_split_is_seeded_and_sized():
    a, b = (make_dataset(AdditionTask(frac_train=0.3, data_seed=s)) for s in (0, 1))
    assert int(a.is_train.sum()) == 3000 and not torch.equal(a.is_train, b.is_train)
    sampled = make_dataset(AdditionTask(n_digits=5, n_samples=1000, frac_train=0.5))
    assert len(sampled.tokens) == 1000 and len(set(map(tuple, sampled.operands.tolist()))) == 1000
    assert torch.equal((sampled.operands[:, 0] + sampled.operands[:, 1]),
                       (sampled.labels * 10 ** torch.arange(5, -1, -1)).sum(-1))


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "addition", "n_digits": 0}, r"AdditionTask.n_digits=0"),
    ({"kind": "addition", "frac_train": 1.5}, r"AdditionTask.frac_train=1.5"),
    ({"kind": "addition", "n_digits": 5}, r"AdditionTask.n_samples=0"),
    ({"kind": "subtraction"}, r"kind='subtraction' is not allowed: must be a registered phenomenon"),
    ({"kind": "addition", "arch": "mlp"}, r"ModelConfig.arch='mlp'.*addition task has models for \['transformer'\]"),
    ({"kind": "addition", "batch_size": 6000}, r"TrainConfig.batch_size=6000"),
])
def test_bad_task_parameters_fail_at_once_naming_the_parameter(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**kwargs)


def test_an_addition_config_round_trips_and_its_kind_is_hashed():
    cfg = make_config(kind="addition", n_digits=3, n_samples=20_000, batch_size=64)
    assert cfg.to_dict()["task"]["kind"] == "addition"
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.replace(kind="grokking").task.kind == "grokking"


def test_minibatches_are_seeded_permutations_per_epoch():
    batches = minibatches(10, 4, seed=3)
    epoch = [next(batches) for _ in range(2)]  # 8 of 10 rows: the incomplete batch is dropped
    assert all(len(b) == 4 for b in epoch) and len(set(torch.cat(epoch).tolist())) == 8
    again = minibatches(10, 4, seed=3)
    assert all(torch.equal(b, next(again)) for b in epoch)


def planted_metrics():
    steps = np.arange(0, 501, 50)
    acc = lambda at: np.where(steps >= at, 1.0, 0.5)
    loss = lambda at: np.where(steps >= at, 1e-4, 2.0)
    return pd.DataFrame({"step": steps, "test_acc_d0": acc(100), "test_acc_d1": acc(300), "test_acc_d2": acc(100),
                         "train_loss_d0": loss(100), "train_loss_d1": loss(300), "train_loss_d2": loss(100),
                         "test_acc_no_carry": 1.0, "test_acc_single_carry": 1.0, "test_acc_cascade": acc(450)})


def test_the_definition_reads_planted_curves():
    m = planted_metrics()
    assert definition.learned_steps(m) == [100, 300, 100]
    assert definition.halfway_steps(m) == [100, 300, 100]
    assert definition.learning_order([100, 300, 100]) == "d0=d2<d1" and definition.learning_order([None, 5, 1]) == "d2<d1"
    s = definition.summarize(m)
    assert s["distinct_steps"] is False and s["final_acc_cascade"] == 1.0  # d0 and d2 tie
    m2 = m.assign(test_acc_d2=np.where(m.step >= 450, 1.0, 0.0))  # 100, 300, 450: gaps of 4 and 3 evaluations
    assert definition.shows(m2) and not definition.shows(m2.assign(test_acc_d1=0.0))
    near = m.assign(test_acc_d2=np.where(m.step >= 200, 1.0, 0.0))  # 100, 200, 300: two evaluations apart
    assert not definition.shows(near) and definition.shows(near, min_gap=2) and definition.shows(near, min_gap=1)
    with pytest.raises(ScidlError, match="min_gap=0"):
        definition.shows(near, min_gap=0)


def test_the_training_loss_is_cross_entropy_over_every_answer_digit():
    cfg = make_config(kind="addition", d_model=16, n_heads=2, d_mlp=32)
    model, data = make_model(cfg.model, cfg.task), make_dataset(cfg.task)
    x, y = data.tokens[:50], data.labels[:50]
    logits = model(x)[:, -3:]
    expected = torch.nn.functional.cross_entropy(logits.double().reshape(-1, 10), y.reshape(-1))
    assert torch.allclose(definition.training_loss(model, x, y), expected)


def test_carry_pairs_differ_only_in_the_carry():
    data = make_dataset(AdditionTask(frac_train=0.5))
    clean, corrupt, c_ans, x_ans = zoom.carry_pairs(data, torch.arange(len(data.tokens)), column=0, n=200)
    a0, b0, a0x = clean[:, 1], clean[:, 4], corrupt[:, 1]
    assert bool((a0 + b0 >= 10).all()) and bool((a0x + b0 < 10).all())
    assert torch.equal(clean[:, [0, 2, 3, 4, 5, 6]], corrupt[:, [0, 2, 3, 4, 5, 6]])  # c2 = 0 in both
    assert torch.equal(c_ans, (x_ans + 1) % 10)


def test_auc_of_planted_scores():
    assert zoom.auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert zoom.auc(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1])) == 0.5
    with pytest.raises(Exception, match="undefined"):
        zoom.auc(np.array([1.0, 2.0]), np.array([1, 1]))


def test_a_short_addition_run_trains_evaluates_and_zooms(tmp_path):
    cfg = make_config(kind="addition", d_model=16, n_heads=2, d_mlp=64, steps=40, batch_size=64, eval_every=20,
                      checkpoint_every=20, lr=3e-3)
    run = train(cfg, tmp_path, progress=False)
    m = run.metrics
    assert {"test_acc_d0", "test_loss_d2", "test_acc_cascade", "train_loss"} <= set(m.columns)
    assert m.train_loss.iloc[-1] < m.train_loss.iloc[0]
    model, data = run.load_model(), make_dataset(cfg.task)
    rows = torch.nonzero(data.is_train).flatten()
    att = zoom.attention_by_answer(model, data.tokens[rows[:100]])
    sums = att.groupby(["layer", "head", "digit"]).weight.sum()
    assert np.allclose(sums.to_numpy(), 1.0, atol=1e-5)  # each query's pattern sums to 1
    table = zoom.ablation_by_carry(model, data, rows[:300])
    assert list(table.component) == zoom.component_names(model)
    reading = zoom.reads_addition(model, data, n_prompts=100)
    assert set(reading) == {"digit_attention", "carry_attention", "train_acc_cascade", "learned"}
