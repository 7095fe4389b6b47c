import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import torch

from scidl.config import ConfigError, make_config
from scidl.ensemble import StackedAdamW, can_batch, train_ensemble
from scidl.store import RunStore
from scidl.sweep import SweepConfig, plan, run_sweep
from scidl.train import train

BASE = make_config(p=23, arch="mlp", d_mlp=64, act="quadratic", lr=3e-3, steps=200, eval_every=20,
                   checkpoint_every=0)


def test_grid_and_random_sample():
    sw = SweepConfig({"frac_train": [0.3, 0.5], "weight_decay": [0, 1, 2], "seed": 7}, BASE)
    configs = sw.configs()
    assert len(configs) == 6 and {c.train.seed for c in configs} == {7}
    assert {(c.task.frac_train, c.train.weight_decay) for c in configs} == {
        (f, w) for f in (0.3, 0.5) for w in (0, 1, 2)}
    sample = SweepConfig({"frac_train": [0.3, 0.5], "weight_decay": [0, 1, 2]}, BASE, n_samples=4)
    assert len(sample.configs()) == 4 and len(set(sample.configs())) == 4
    same_seed = SweepConfig({"frac_train": [0.3, 0.5], "weight_decay": [0, 1, 2]}, BASE, n_samples=4)
    assert same_seed.configs() == sample.configs()


def test_bad_grid_values_name_the_field():
    with pytest.raises(ConfigError, match=r"frac_train=1.5"):
        SweepConfig({"frac_train": [0.3, 1.5]}, BASE)
    with pytest.raises(ConfigError, match=r"'width'"):
        SweepConfig({"width": [1]}, BASE)
    with pytest.raises(ConfigError, match=r"grid\['seed'\]"):
        SweepConfig({"seed": []}, BASE)


def test_plan_batches_small_mlps_only():
    small = SweepConfig({"seed": list(range(6))}, BASE).configs()
    assert [len(u) for u in plan(small)] == [6]
    big = SweepConfig({"seed": list(range(6))}, BASE.replace(p=97, d_mlp=512)).configs()
    assert [len(u) for u in plan(big)] == [1] * 6
    transformer = SweepConfig({"seed": [0, 1, 2, 3]}, make_config(p=23, steps=10)).configs()
    assert [len(u) for u in plan(transformer)] == [1] * 4


def test_ensemble_member_is_bit_identical_to_the_same_config_trained_alone(tmp_path):
    """One hash, one result: a member of K (own lr, wd, init scale, seed and split) is the same bits
    as the config trained alone, whichever path trained it first."""
    members = [BASE.replace(steps=300, lr=lr, weight_decay=wd, init_scale=s, seed=seed, data_seed=ds)
               for lr, wd, s, seed, ds in [(3e-3, 1.0, 1.0, 0, 0), (1e-3, 0.0, 0.7, 1, 5),
                                           (5e-3, 2.0, 1.5, 2, 9), (3e-3, 0.3, 1.0, 3, 3)]]
    train_ensemble(members, RunStore(tmp_path / "batched"))
    for cfg in members:
        batched = RunStore(tmp_path / "batched").load(cfg)
        alone = train(cfg, RunStore(tmp_path / "alone"), progress=False)
        pd.testing.assert_frame_equal(batched.metrics, alone.metrics, check_exact=True)
        assert batched.checkpoint_steps == alone.checkpoint_steps
        for step in alone.checkpoint_steps:
            state_b, state_a = batched.load_state(step), alone.load_state(step)
            assert all(torch.equal(state_b[k], state_a[k]) for k in state_a), (cfg.hash, step)


def test_stacked_adamw_is_torchs_fused_adamw_with_warmup_on_each_member():
    """Each member's update is torch.optim.AdamW(fused=True) under train's LambdaLR warm-up, bit for
    bit; an inactive member keeps its weights."""
    configs = [BASE.replace(lr=3e-3, weight_decay=1.0, warmup_steps=3),
               BASE.replace(lr=1e-3, weight_decay=0.3, warmup_steps=3, beta2=0.99)]
    g = torch.Generator().manual_seed(0)
    stacked = [torch.randn(2, 5, 4, generator=g).requires_grad_(), torch.randn(2, 4, 3, generator=g).requires_grad_()]
    alone = [[p[k].detach().clone().requires_grad_() for p in stacked] for k in range(2)]
    opts = []
    for k, cfg in enumerate(configs):
        t = cfg.train
        opt = torch.optim.AdamW(alone[k], lr=t.lr, weight_decay=t.weight_decay, betas=(t.beta1, t.beta2),
                                fused=True)
        opts.append((opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 3, 1.0))))
    ours = StackedAdamW(stacked, configs)
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in stacked]
        active = torch.tensor([True, step < 4])
        frozen = stacked[0][1].detach().clone()
        for p, gr in zip(stacked, grads):
            p.grad = gr.clone()
        ours.step(active)
        for k, (opt, sched) in enumerate(opts):
            if active[k]:
                for p, gr in zip(alone[k], grads):
                    p.grad = gr[k].clone()
                opt.step()
                sched.step()
        for k in range(2):
            assert all(torch.equal(p[k], q) for p, q in zip(stacked, alone[k])), (step, k)
        if not active[1]:
            assert torch.equal(stacked[0][1], frozen)


def test_members_with_different_split_sizes_are_not_batched():
    sizes = [BASE.replace(frac_train=f) for f in (0.3, 0.5)]
    assert not can_batch(sizes)
    assert [len(u) for u in plan(sizes * 1, batch=True)] == [1, 1]
    with pytest.raises(ConfigError, match="train-split size"):
        train_ensemble(sizes, None)


def test_one_diverging_member_is_flagged_and_the_rest_continue(tmp_path):
    good = [BASE.replace(seed=s) for s in range(3)]
    bad = BASE.replace(lr=1e30, warmup_steps=0)
    df = run_sweep(good[:1] + [bad] + good[1:], RunStore(tmp_path), executor="inprocess", batch=True,
                   progress=False)
    status = dict(zip(df.hash, df.status))
    assert status[bad.hash] == "diverged" and df.loc[df.hash == bad.hash, "phase"].item() == "diverged"
    assert all(status[c.hash] == "finished" for c in good)
    alone = train(good[2], RunStore(tmp_path / "alone"), progress=False).metrics
    batched = RunStore(tmp_path).load(good[2]).metrics
    pd.testing.assert_series_equal(batched.train_loss, alone.train_loss, check_exact=True)


SWEEP_SCRIPT = """
import sys
from scidl.config import make_config
from scidl.store import RunStore
from scidl.sweep import SweepConfig, run_sweep
base = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=150, eval_every=50, checkpoint_every=0)
sweep = SweepConfig({"frac_train": [0.3, 0.4, 0.5, 0.6], "weight_decay": [0.0, 1.0, 2.0], "seed": [0, 1]}, base)
if __name__ == "__main__":
    df = run_sweep(sweep, RunStore(sys.argv[1]), executor="inprocess", progress=False)
    print(len(df), (df.status == "finished").sum())
"""


def _finished(root):
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/summary.json")}


def test_sigkilled_sweep_resumes_without_retraining(tmp_path):
    root, script = tmp_path / "runs", tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(root)])
    deadline = time.time() + 120
    while time.time() < deadline and len(_finished(root)) < 10:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished(root)
    assert 10 <= len(before) < 24, "killed half-way"
    out = subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["24", "24"]
    after = _finished(root)
    assert len(after) == 24 and all(after[h] == t for h, t in before.items()), "finished runs untouched"
    assert not list(root.glob(".tmp-*"))


def test_dask_local_cluster_survives_a_killed_worker(tmp_path):
    from distributed import Client, LocalCluster

    base = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=400, eval_every=100,
                       checkpoint_every=0)
    sweep = SweepConfig({"frac_train": [0.3, 0.5, 0.7], "seed": [0, 1, 2, 3]}, base)
    store = RunStore(tmp_path / "runs")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("df", run_sweep(
            sweep, store, executor="dask", address=cluster.scheduler_address, progress=False)))
        thread.start()
        deadline = time.time() + 120
        while time.time() < deadline and not list(store.root.glob(".tmp-*")):
            time.sleep(0.02)
        os.kill(pids[0], signal.SIGKILL)  # a worker dies mid-run
        thread.join(timeout=300)
    df = result["df"]
    assert len(df) == 12 and (df.status == "finished").all()
    assert len(store.runs()) == 12


def test_sweep_frame_is_numeric_even_when_nothing_groks(tmp_path):
    configs = SweepConfig({"seed": [0, 1]}, BASE.replace(steps=5)).configs()
    df = run_sweep(configs, RunStore(tmp_path), executor="inprocess", progress=False)
    assert df.grok_step.isna().all() and df.grok_step.dtype == float
    from scidl.plots import plot_heatmap, plot_phase_diagram
    plot_heatmap(df, "frac_train", "weight_decay", "grok_step")
    plot_phase_diagram(df, "frac_train", "weight_decay")
