import dataclasses

import pytest

from scidl.config import ConfigError, ModelConfig, RunConfig, TrainConfig, make_config
from scidl.phenomena.grokking.task import TaskConfig


@pytest.mark.parametrize("kwargs, field, value", [
    (dict(p=100), "p", "100"),
    (dict(p=1), "p", "1"),
    (dict(p=2), "p", "2"),
    (dict(frac_train=1.5), "frac_train", "1.5"),
    (dict(frac_train=0), "frac_train", "0"),
    (dict(op="pow"), "op", "'pow'"),
])
def test_task_errors_name_field_value_and_rule(kwargs, field, value):
    with pytest.raises(ConfigError) as err:
        TaskConfig(**kwargs)
    msg = str(err.value)
    assert f"ModularTask.{field}={value}" in msg and "allowed" in msg


def test_error_messages_say_what_is_allowed():
    with pytest.raises(ConfigError, match="prime"):
        TaskConfig(p=100)
    with pytest.raises(ConfigError, match="0 < frac_train < 1"):
        TaskConfig(frac_train=1.5)
    with pytest.raises(ConfigError, match="add"):
        TaskConfig(op="pow")


@pytest.mark.parametrize("cls, kwargs, field", [
    (ModelConfig, dict(arch="rnn"), "arch"),
    (ModelConfig, dict(d_model=130, n_heads=4), "n_heads"),
    (ModelConfig, dict(d_mlp=0), "d_mlp"),
    (ModelConfig, dict(act="tanh"), "act"),
    (TrainConfig, dict(lr=0), "lr"),
    (TrainConfig, dict(lr=-1e-3), "lr"),
    (TrainConfig, dict(weight_decay=-0.1), "weight_decay"),
    (TrainConfig, dict(steps=0), "steps"),
    (TrainConfig, dict(steps=2.5), "steps"),
    (TrainConfig, dict(beta2=1.0), "beta2"),
    (TrainConfig, dict(checkpoint_steps=(5, 10**9)), "checkpoint_steps"),
])
def test_model_and_train_errors(cls, kwargs, field):
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field}="):
        cls(**kwargs)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TaskConfig().p = 7


def test_hash_is_stable_and_sensitive():
    a, b = RunConfig(), RunConfig()
    assert a.hash == b.hash and len(a.hash) == 12
    assert make_config(seed=1).hash != a.hash
    assert make_config(frac_train=0.31).hash != a.hash


def test_roundtrip_through_dict():
    cfg = make_config(op="sub", p=97, arch="mlp", checkpoint_steps=[30, 10], steps=50)
    assert cfg.train.checkpoint_steps == (10, 30)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict(cfg.to_dict()).hash == cfg.hash


def test_replace_by_flat_or_dotted_name():
    cfg = RunConfig().replace(**{"p": 97, "train.lr": 0.01})
    assert cfg.task.p == 97 and cfg.train.lr == 0.01
    with pytest.raises(ConfigError, match="'width'"):
        make_config(width=3)


def test_equal_values_give_one_hash():
    import numpy as np
    assert make_config(weight_decay=1).hash == make_config(weight_decay=1.0).hash
    assert make_config(p=np.int64(97)).hash == make_config(p=97).hash
    assert make_config(lr=np.float32(0.5)).train.lr == 0.5


def test_grokking_hashes_survive_the_move_to_plug_ins():
    """Runs stored before phenomena were plug-ins (no task kind, no batch_size) keep their names."""
    assert make_config().hash == "bb445f68fab4"
    assert make_config(p=97, arch="mlp", lr=3e-3).hash == "a1028bbf69d8"
    old = make_config(p=97).to_dict()
    del old["task"]["kind"], old["train"]["batch_size"]
    assert RunConfig.from_dict(old).hash == make_config(p=97).hash
    assert make_config(batch_size=64).hash != make_config().hash


@pytest.mark.parametrize("field, value", [("seed", 2**32), ("seed", 2**64), ("data_seed", 2**40), ("seed", -1)])
def test_seeds_are_bounded_where_every_generator_accepts_them(field, value):
    with pytest.raises(ConfigError, match=f"{field}={value}"):
        make_config(**{field: value})
    with pytest.raises(ConfigError, match=f"data_seed={value}" if field == "data_seed" else f"seed={value}"):
        make_config(kind="addition", **{field: value})
    assert make_config(seed=2**32 - 1, data_seed=2**32 - 1).train.seed == 2**32 - 1
