import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from scidl.phenomena.grokking.definition import grokking_summary, is_grokking
from scidl.train import TrainingDiverged, configure_torch, evaluate, train
from scidl.phenomena.grokking.task import make_dataset


def test_same_seed_gives_bit_identical_metrics(tiny_config, tmp_path):
    from scidl.store import RunStore
    a = train(tiny_config, RunStore(tmp_path / "a"), progress=False).metrics
    b = train(tiny_config, RunStore(tmp_path / "b"), progress=False).metrics
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = train(tiny_config.replace(seed=1), RunStore(tmp_path / "c"), progress=False).metrics
    assert not a.equals(c)


def test_metrics_columns_and_eval_steps(tiny_config, store):
    run = train(tiny_config, store, progress=False)
    assert list(run.metrics.step) == list(range(0, 61, 10))
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "weight_norm"} <= set(run.metrics)
    assert run.metrics.train_loss.iloc[-1] < run.metrics.train_loss.iloc[0]
    assert run.checkpoint_steps == [0, 20, 40, 60]


def test_evaluate_matches_cross_entropy_reference(tiny_config, store):
    run = train(tiny_config, store, progress=False)
    model, data = run.load_model(), make_dataset(tiny_config.task)
    x, y = data.test
    with torch.no_grad():
        logits = model(x)[:, -1]
    ours = evaluate(model, data)
    assert math.isclose(ours["test_loss"], float(F.cross_entropy(logits, y)), rel_tol=1e-5)
    assert ours["test_acc"] == float((logits.argmax(-1) == y).float().mean())
    # the final checkpoint reproduces the last logged evaluation
    assert math.isclose(ours["train_loss"], run.metrics.train_loss.iloc[-1], rel_tol=1e-6)


def test_divergence_is_detected_stored_and_raised(tiny_config, store):
    bad = tiny_config.replace(lr=1e30, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match="non-finite at step"):
        train(bad, store, progress=False)
    run = train(bad, store, progress=False, on_divergence="stop")
    assert run.summary["status"] == "diverged" and run.summary["diverged_step"] < bad.train.steps
    assert not math.isfinite(run.metrics.train_loss.iloc[-1])


def test_mlp_groks(mlp_grok_config, store):
    run = train(mlp_grok_config, store, progress=False)
    s = grokking_summary(run.metrics)
    assert run.metrics.test_acc.iloc[-1] >= 0.99
    assert s["grok_step"] > s["memorization_step"]


def test_grokking_summary_on_known_curves():
    m = pd.DataFrame({"step": [0, 100, 200, 1000, 2000],
                      "train_acc": [0.0, 0.5, 1.0, 1.0, 1.0],
                      "test_acc": [0.0, 0.0, 0.1, 0.995, 1.0]})
    assert grokking_summary(m) == {"memorization_step": 200, "grok_step": 1000,
                                   "grok_gap": 800, "grok_ratio": 5.0}
    assert is_grokking(m) and not is_grokking(m, min_ratio=6)
    never = m.assign(test_acc=0.1)
    assert grokking_summary(never)["grok_step"] is None and not is_grokking(never)


def test_float64_loss_matches_a_float64_reference_and_float32_differs():
    from scidl.train import cross_entropy
    logits = torch.tensor([[30.0, 0.0, -5.0], [0.0, 25.0, 1.0]])
    labels = torch.tensor([0, 1])
    exact = F.cross_entropy(logits.double(), labels)
    assert float(cross_entropy(logits, labels)) == pytest.approx(float(exact), rel=1e-12)
    assert float(cross_entropy(logits, labels, "float32")) != pytest.approx(float(exact), rel=1e-3)


def test_loss_dtype_is_a_validated_config_field():
    from scidl.config import ConfigError, make_config
    assert make_config().train.loss_dtype == "float64"
    assert make_config(loss_dtype="float32").hash != make_config().hash
    with pytest.raises(ConfigError, match="loss_dtype='float16'"):
        make_config(loss_dtype="float16")


def test_max_spike_ratio_on_known_curves():
    import pandas as pd
    from scidl.phenomena.grokking.definition import max_spike_ratio
    m = pd.DataFrame({"step": [0, 10, 20, 30, 40], "train_acc": [0, 1, 1, 1, 1],
                      "train_loss": [4.0, 1e-3, 1e-6, 1e-2, 1e-7]})
    assert max_spike_ratio(m) == pytest.approx(1e4)  # 1e-2 after a minimum of 1e-6
    assert max_spike_ratio(m.assign(train_loss=[4.0, 1e-3, 1e-4, 1e-5, 1e-6])) == 1.0
    with pytest.raises(ValueError, match="memorization"):
        max_spike_ratio(m.assign(train_acc=0.0))


def test_configure_torch_lets_steps_reuse_memory_instead_of_faulting_in_fresh_pages():
    import subprocess
    import sys

    code = """if True:
        import resource, sys, torch, scidl
        from scidl.registry import make_model
        from scidl.phenomena.grokking.task import make_dataset
        from scidl.train import cross_entropy
        if sys.argv[1] == "configured":
            scidl.configure_torch(1)
        else:
            torch.set_num_threads(1)
        cfg = scidl.make_config(p=113)
        model, (x, y) = make_model(cfg.model, cfg.task), make_dataset(cfg.task).train
        def step():
            cross_entropy(model.last_logits(x), y).backward()
        step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            step()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
    """
    faults = {how: float(subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                                        check=True).stdout) for how in ("configured", "plain")}
    assert faults["configured"] * 3 < faults["plain"], faults


def test_configure_torch_stops_nan_filling_new_tensors_but_stays_deterministic():
    before = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.utils.deterministic.fill_uninitialized_memory = True
        assert torch.empty(4).isnan().all()  # deterministic mode's debugging fill, ~10 ms per p=113 step
        configure_torch(1)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before
        torch.set_num_threads(1)
