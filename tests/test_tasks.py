import pytest
import torch

from scidl.phenomena.grokking.task import TaskConfig
from scidl.phenomena.grokking.task import OPERATIONS, make_dataset

REFERENCE = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
    "div": lambda a, b, p: (a * pow(b, p - 2, p)) % p,  # Fermat inverse
    "x2+y2": lambda a, b, p: (a**2 + b**2) % p,
    "x2+xy+y2": lambda a, b, p: (a**2 + a * b + b**2) % p,
    "x3+xy": lambda a, b, p: (a**3 + a * b) % p,
}


def test_registry_has_the_required_operations():
    assert set(REFERENCE) <= set(OPERATIONS)


@pytest.mark.parametrize("op", sorted(REFERENCE))
def test_labels_match_python_reference(op):
    ds = make_dataset(TaskConfig(op=op, p=13, frac_train=0.5))
    for (a, b, eq), y in zip(ds.tokens.tolist(), ds.labels.tolist()):
        assert eq == 13 and y == REFERENCE[op](a, b, 13)
    assert len(ds.tokens) == (13 * 12 if op == "div" else 13 * 13)


def test_split_is_deterministic_and_seeded():
    a = make_dataset(TaskConfig(p=31, frac_train=0.3, data_seed=0))
    b = make_dataset(TaskConfig(p=31, frac_train=0.3, data_seed=0))
    c = make_dataset(TaskConfig(p=31, frac_train=0.3, data_seed=1))
    assert torch.equal(a.is_train, b.is_train) and not torch.equal(a.is_train, c.is_train)
    assert int(a.is_train.sum()) == round(0.3 * 31 * 31)
    x, _ = a.train
    t, _ = a.test
    assert len(x) + len(t) == 31 * 31


def test_random_control_task_is_a_fixed_function_without_structure():
    a = make_dataset(TaskConfig(op="random", p=31, frac_train=0.5))
    b = make_dataset(TaskConfig(op="random", p=31, frac_train=0.5, data_seed=3))
    assert torch.equal(a.labels, b.labels)  # same function, different split
    add = make_dataset(TaskConfig(op="add", p=31, frac_train=0.5))
    assert (a.labels == add.labels).float().mean() < 0.1
