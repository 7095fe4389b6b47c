"""No orphan processes: the process executor's workers end when their driver dies, however it dies."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DRIVER = """
import sys
from scidl.config import make_config
from scidl.store import RunStore
from scidl.sweep import run_sweep
base = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=20000, eval_every=1000, checkpoint_every=0)
if __name__ == "__main__":
    run_sweep([base.replace(seed=s) for s in range(4)], RunStore(sys.argv[1]), executor=sys.argv[2],
              workers=2, progress=False)
"""


def _children(pid: int) -> set[int]:
    """Return the pids of every live process whose parent is `pid`."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Return whether `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_sigkill_of_the_driver_leaves_no_worker_behind(tmp_path, executor):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs"), executor],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.time() + 60, set()
        while time.time() < deadline and len(workers) < 2:  # both workers started and training
            time.sleep(0.2)
            workers = {c for c in _children(driver.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
        assert len(workers) >= 2, f"the {executor} executor never started its two workers"
        time.sleep(2)  # let them get into training
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their SIGKILLed driver"
    finally:
        if driver.poll() is None:
            driver.kill()


LIGHT_DRIVER = """
import sys
if __name__ == "__main__":  # a spawned worker re-runs the main module's top level: keep imports below
    from scidl.config import make_config
    from scidl.store import RunStore
    from scidl.sweep import run_sweep
    base = make_config(p=23, d_model=32, n_heads=4, d_mlp=64, steps=20000, eval_every=1000, checkpoint_every=0)
    run_sweep([base.replace(seed=s) for s in range(4)], RunStore(sys.argv[1]), executor="processes",
              workers=2, progress=False)
"""


def test_sigkill_of_the_driver_while_workers_start_leaves_none_behind(tmp_path):
    """Killed while its workers are still importing torch (seconds), the driver takes them along:
    the guard runs before a worker unpickles any task, so before it imports scidl."""
    script = tmp_path / "driver.py"
    script.write_text(LIGHT_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.time() + 60, set()
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.01)
            workers = {c for c in _children(driver.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
        assert len(workers) >= 2, "the processes executor never started its two workers"
        starting = [w for w in workers if "torch" not in Path(f"/proc/{w}/maps").read_text()]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.time() + 1  # measured here: 0.02 s; 2 s when the guard ran after importing scidl
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.01)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their SIGKILLed driver by 1 s (still starting: {starting})"
        assert starting, "no worker was still starting when the driver died: the test did not test start-up"
    finally:
        if driver.poll() is None:
            driver.kill()


def test_sigkill_of_papermill_ends_its_kernel(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(120)")])
    nbformat.write(nb, tmp_path / "sleep.ipynb")
    runner = subprocess.Popen([sys.executable, "-m", "papermill", str(tmp_path / "sleep.ipynb"),
                               str(tmp_path / "out.ipynb"), "-k", "python3", "--no-progress-bar"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, kernels = time.time() + 60, set()
        while time.time() < deadline and not kernels:
            time.sleep(0.2)
            kernels = {c for c in _children(runner.pid) if b"ipykernel" in Path(f"/proc/{c}/cmdline").read_bytes()}
        assert kernels, "papermill never started its kernel"
        time.sleep(2)
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(k) for k in kernels):
            time.sleep(0.2)
        assert not [k for k in kernels if _alive(k)], "the kernel outlived its SIGKILLed papermill"
    finally:
        if runner.poll() is None:
            runner.kill()
