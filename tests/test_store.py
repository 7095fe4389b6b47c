import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scidl.store import RunNotFound, RunStore, StoreError, StoreWarning
from scidl.train import train

KILLABLE = """
import sys, torch
from scidl.config import make_config
from scidl.store import RunNotFound, RunStore, StoreError, StoreWarning
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


# ---------------------------------------------------------------- damaged folders


def _trained(cfg, store):
    run = train(cfg, store, progress=False)
    return run, run.summary["finished_at"]


def test_folder_without_summary_is_set_aside_and_trained_once(tiny_config, store):
    folder = store.path(tiny_config)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.warns(StoreWarning, match="no summary.json"):
        run, finished = _trained(tiny_config, store)
    assert run.summary["status"] == "finished"
    assert train(tiny_config, store, progress=False).summary["finished_at"] == finished  # loaded, not retrained
    assert len(list(store.root.glob(f".damaged-{tiny_config.hash}-*"))) == 1


@pytest.mark.parametrize("name, damage, message", [
    ("config.json", lambda p: p.write_text(p.read_text()[:20]), "cannot be read as JSON"),
    ("summary.json", lambda p: p.write_text(p.read_text()[:20]), "cannot be read as JSON"),
    ("metrics.parquet", lambda p: p.write_bytes(p.read_bytes()[:50]), "truncated"),
    ("config.json", lambda p: p.write_text(p.read_text().replace('"p": 23', '"p": 29')), "hashes to"),
])
def test_damaged_file_is_named_then_set_aside_and_retrained(tiny_config, store, name, damage, message):
    _, first = _trained(tiny_config, store)
    path = store.path(tiny_config) / name
    damage(path)
    with pytest.raises(StoreError, match=message) as err:
        store.load(tiny_config)
    assert str(path) in str(err.value)
    assert not store.has(tiny_config)
    with pytest.warns(StoreWarning, match="skipped a damaged run folder"):
        assert store.index().empty
    with pytest.warns(StoreWarning, match="moved to .damaged-"):
        run, again = _trained(tiny_config, store)
    assert again != first and run.summary["status"] == "finished" and store.has(tiny_config)


def test_damaged_checkpoint_names_the_file(tiny_config, store):
    run, _ = _trained(tiny_config, store)
    path = run.path / "checkpoints" / "step_0000020.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match="cannot be read as safetensors") as err:
        run.load_model(20)
    assert str(path) in str(err.value)
    with pytest.raises(StoreError, match=r"step=7 is not allowed"):
        run.load_state(7)


def test_checkpoint_of_another_shape_is_refused_naming_the_folder(tiny_config, store):
    run, _ = _trained(tiny_config, store)
    other, _ = _trained(tiny_config.replace(d_mlp=32), store)
    target = run.path / "checkpoints" / "step_0000060.safetensors"
    target.write_bytes((other.path / "checkpoints" / "step_0000060.safetensors").read_bytes())
    with pytest.raises(StoreError, match="bytes changed"):  # the swap itself is caught by the manifest
        run.load_model(60)
    from scidl.store import write_manifest

    write_manifest(run.path)  # a swap with a rewritten manifest: the shape still gives it away
    with pytest.raises(StoreError, match="does not fit the run's config"):
        run.load_model(60)


def test_unknown_run_is_a_clear_key_error(store):
    with pytest.raises(RunNotFound, match="run='nope' is not allowed") as err:
        store.load("nope")
    assert isinstance(err.value, KeyError)


# ---------------------------------------------------------------- integrity (manifest.json)


def test_every_one_byte_flip_in_a_run_folder_is_detected(store):
    """Each byte of every file of a small run, flipped in turn, is named on load (sha256 manifest)."""
    from scidl.config import make_config

    cfg = make_config(arch="mlp", p=5, d_mlp=4, act="quadratic", steps=2, eval_every=1, checkpoint_every=1)
    run = train(cfg, store, progress=False)
    files = sorted(p for p in run.path.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"manifest.json", "summary.json", "metrics.parquet", "config.json"}
    missed, total = [], 0
    for path in files:
        data = bytearray(path.read_bytes())
        for i in range(len(data)):
            data[i] ^= 0xFF
            path.write_bytes(bytes(data))
            try:
                store.load(cfg.hash)
                for step in run.checkpoint_steps:
                    run.load_state(step)
            except StoreError:
                pass
            else:
                missed.append((path.name, i))
            data[i] ^= 0xFF
            total += 1
        path.write_bytes(bytes(data))
    assert total > 1000 and missed == [], missed[:5]
    store.load(cfg.hash)  # restored: loads again


def test_an_edited_summary_is_named_set_aside_and_retrained(tiny_config, store):
    run, first = _trained(tiny_config, store)
    path = run.path / "summary.json"
    path.write_text(path.read_text().replace('"status": "finished"', '"status": "finished" ', 1))
    with pytest.raises(StoreError, match="bytes changed") as err:
        store.load(tiny_config)
    assert str(path) in str(err.value) and not store.has(tiny_config)
    with pytest.warns(StoreWarning, match="moved to .damaged-"):
        again, second = _trained(tiny_config, store)
    assert second != first and store.has(tiny_config)


def test_a_missing_manifest_or_an_extra_checkpoint_is_damage(tiny_config, store):
    from scidl.store import MANIFEST

    run, _ = _trained(tiny_config, store)
    extra = run.path / "checkpoints" / "step_0000030.safetensors"
    extra.write_bytes((run.path / "checkpoints" / "step_0000020.safetensors").read_bytes())
    with pytest.raises(StoreError, match="not in the manifest"):
        store.load(tiny_config)
    extra.unlink()
    (run.path / MANIFEST).unlink()
    with pytest.raises(StoreError, match="manifest.json: missing"):
        store.load(tiny_config)


def test_non_finite_weights_are_refused_even_with_a_consistent_manifest(tiny_config, store):
    from safetensors.torch import load_file, save_file

    from scidl.store import write_manifest

    run, _ = _trained(tiny_config, store)
    path = run.path / "checkpoints" / "step_0000020.safetensors"
    state = load_file(path)
    state["W_E"][0, 0] = float("nan")
    save_file(state, path)
    write_manifest(run.path)  # the bytes are now "as written": only the values betray the damage
    with pytest.raises(StoreError, match="non-finite weights in \\['W_E'\\]") as err:
        run.load_state(20)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage, message", [
    ("swap", "the checkpoint is not this run's"),
    ("drop one", r"do not match the config's schedule \(missing \[40\]"),
    ("no folder", "checkpoints: missing or not a folder"),
    ("a file", "checkpoints: missing or not a folder"),
])
def test_checkpoints_that_are_not_the_configs_are_damage_even_with_a_consistent_manifest(tiny_config, store,
                                                                                       damage, message):
    """The manifest says the files are as written; the config says what should have been written."""
    import shutil

    from scidl.store import write_manifest

    run, _ = _trained(tiny_config, store)
    folder = run.path / "checkpoints"
    if damage == "swap":
        other, _ = _trained(tiny_config.replace(d_mlp=32), store)
        for f in folder.iterdir():
            f.write_bytes((other.path / "checkpoints" / f.name).read_bytes())
    elif damage == "drop one":
        (folder / "step_0000040.safetensors").unlink()
    else:
        shutil.rmtree(folder)
        if damage == "a file":
            folder.write_text("not a folder")
    write_manifest(run.path)
    assert not store.has(tiny_config)
    with pytest.raises(StoreError, match=message):
        store.load(tiny_config)
    with pytest.warns(StoreWarning, match=message):
        again = train(tiny_config, store, progress=False)  # set aside, trained once more
    assert store.has(tiny_config) and again.checkpoint_steps == [0, 20, 40, 60]
    assert again.load_model(40).blocks[0].mlp.W_in.shape[-1] == tiny_config.model.d_mlp
