import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from scidl.store import RunStore
from scidl.train import train

KILLABLE = """
import sys, torch
from scidl.config import make_config
from scidl.store import RunStore
from scidl.train import train
torch.set_num_threads(1)
cfg = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=int(sys.argv[2]), eval_every=10,
                  checkpoint_every=10)
train(cfg, RunStore(sys.argv[1]), progress=False)
"""


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_rerun_loads_instead_of_retraining(tiny_config, store):
    first = train(tiny_config, store, progress=False)
    stamp = os.stat(first.path / "summary.json").st_mtime_ns
    second = train(tiny_config, store, progress=False)
    assert os.stat(second.path / "summary.json").st_mtime_ns == stamp
    assert second.metrics.equals(first.metrics)


def test_run_layout_has_no_pickles(tiny_config, store):
    run = train(tiny_config, store, progress=False)
    names = _files(run.path)
    assert {"config.json", "metrics.parquet", "summary.json"} <= names
    assert all(n.endswith((".json", ".parquet", ".safetensors")) for n in names), names
    model = run.load_model(20)
    assert torch.equal(model.W_E, run.load_state(20)["W_E"])


def test_index_is_one_row_per_run(tiny_config, store):
    train(tiny_config, store, progress=False)
    train(tiny_config.replace(seed=3), store, progress=False)
    df = store.index()
    assert len(df) == 2 and set(df["train.seed"]) == {0, 3}
    assert {"hash", "task.p", "final_test_acc", "status"} <= set(df.columns)


def test_sigkill_mid_run_leaves_nothing_finished_and_rerun_completes(tmp_path):
    root, steps = tmp_path / "runs", "3000"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(root), steps])
    deadline = time.time() + 120
    while time.time() < deadline and not list(root.glob(".tmp-*/checkpoints/step_0000020.safetensors")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(root.glob(".tmp-*")), "the run should have been killed mid-way"
    assert RunStore(root).runs() == [] and RunStore(root).index().empty
    subprocess.run([sys.executable, "-c", KILLABLE, str(root), steps], check=True)
    runs = RunStore(root).runs()
    assert len(runs) == 1 and runs[0].summary["status"] == "finished"
    assert runs[0].checkpoint_steps == list(range(0, 3001, 10))
    assert len(runs[0].metrics) == 301
    assert not list(root.glob(".tmp-*")), "stale work directories are cleaned up"
