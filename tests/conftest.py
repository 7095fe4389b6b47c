import pytest
import torch

from scidl.config import make_config
from scidl.store import RunStore


@pytest.fixture(autouse=True)
def _torch_setup():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)  # NaN-fills new tensors: a read of unwritten memory shows


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def tiny_config():
    """A small transformer run that trains in about a second."""
    return make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=60, eval_every=10,
                       checkpoint_every=20, lr=3e-3)


@pytest.fixture
def mlp_grok_config():
    """Gromov-style MLP that groks in a few hundred full-batch steps."""
    return make_config(p=47, arch="mlp", d_mlp=256, act="quadratic", frac_train=0.5, lr=3e-3,
                       weight_decay=1.0, steps=1500, eval_every=20, checkpoint_every=0)


@pytest.fixture(scope="session")
def grokked(tmp_path_factory):
    """A p=31 transformer that groks in 1,200 steps (~5 s), trained once per session."""
    import scidl

    cfg = scidl.make_config(p=31, d_model=64, n_heads=4, d_mlp=256, frac_train=0.7, lr=3e-3, steps=1200,
                            eval_every=100, checkpoint_every=0)
    return scidl.train(cfg, store=scidl.RunStore(tmp_path_factory.mktemp("grokked")))
