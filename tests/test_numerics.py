"""One numeric path on every x86-64 CPU with AVX2: the pins, and a training fingerprint whose committed
value every supported host must reproduce (a platform drift is then reported as what it is, with
the CPU and the path in force, instead of as dozens of nbval diffs)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scidl import _numerics

ROOT = Path(__file__).resolve().parents[1]

# A fixed 300-step p=113 run (the fingerprint), 2 threads, hashed over the final state_dict's
# tensors in sorted key order (raw bytes, no names). Computed on the pinned path on an Intel Xeon with
# AVX-512 and AMX; an AMD EPYC-Milan CPU model under qemu (with the preload) reproduced every per-op
# hash and a 5-step run's weights. Issue 26's AMD value (657d064a427e5974, MKL_CBWR=AVX2 without the
# preload) was MKL's AUTO fallback there, which no Intel CPU runs (README: Numerics).
FINGERPRINT = {"weights_sha256_16": "187736e12b22bfbb", "final_test_loss": 15.24187186702222}

FINGERPRINT_RUN = """
import hashlib, json, tempfile
import scidl
from scidl import _numerics
scidl.configure_torch(2)
run = scidl.train(scidl.make_config(p=113, frac_train=0.3, steps=300, eval_every=100),
                  tempfile.mkdtemp(), progress=False)
state = run.load_state()
h = hashlib.sha256()
for key in sorted(state):
    h.update(state[key].contiguous().numpy().tobytes())
print(json.dumps({"weights_sha256_16": h.hexdigest()[:16],
                  "final_test_loss": run.summary["final_test_loss"], "path": _numerics.describe()}))
"""


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _numerics.PINS and k != _numerics.MODE_VARIABLE}
    return {**env, **extra}


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_import_pins_every_library_before_torch_and_keeps_a_users_value():
    code = ("import json, os, scidl, torch; print(json.dumps({k: os.environ.get(k) for k in "
            "scidl._numerics.PINS} | {'aten': torch.backends.cpu.get_cpu_capability()}))")
    out = _python(code, _clean_env())
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    if _numerics.supported()[0]:
        assert got == {**_numerics.PINS, "aten": "AVX2"}
    else:
        assert all(got[k] is None for k in _numerics.PINS)
    out = _python(code, _clean_env(MKL_CBWR="AVX512"))  # a value the user set is kept
    assert json.loads(out.stdout)["MKL_CBWR"] == "AVX512"
    out = _python(code, _clean_env(SCIDL_NUMERICS="native"))  # the fast path: nothing pinned
    assert all(v is None for k, v in json.loads(out.stdout).items() if k != "aten")


def test_a_bad_mode_is_refused_naming_the_variable_and_the_choices():
    out = _python("import scidl", _clean_env(SCIDL_NUMERICS="fast"))
    assert out.returncode != 0
    assert "SCIDL_NUMERICS='fast' is not allowed: one of portable, native" in out.stderr
    shell = subprocess.run([sys.executable, _numerics.__file__, "--exports"], capture_output=True,
                           text=True, env=_clean_env(SCIDL_NUMERICS="fast"))
    assert shell.returncode == 2 and "SCIDL_NUMERICS='fast' is not allowed" in shell.stderr


def test_setup_exports_are_the_pins_and_keep_a_users_value():
    shell = subprocess.run([sys.executable, _numerics.__file__, "--exports"], capture_output=True,
                           text=True, env=_clean_env(), check=True)
    if not _numerics.supported()[0]:
        assert "export" not in shell.stdout and "nbval is skipped" in shell.stdout
        return
    script = shell.stdout + "\n" + "; ".join(f'echo "{k}=${k}"' for k in _numerics.PINS)
    got = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env=_clean_env(OPENBLAS_CORETYPE="Zen")).stdout.split()
    assert got == [f"{k}={'Zen' if k == 'OPENBLAS_CORETYPE' else v}" for k, v in _numerics.PINS.items()]


def test_supported_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(_numerics.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(_numerics, "cpu_flags", lambda: {"sse2", "avx"})
    assert _numerics.supported() == (False, "this x86-64 CPU lacks AVX2 and FMA")
    monkeypatch.setattr(_numerics.platform, "machine", lambda: "arm64")
    assert _numerics.supported() == (False, "this machine is arm64, not x86-64")
    monkeypatch.setattr(_numerics, "supported", lambda: (False, "why"))
    assert _numerics.pins() == {}


MATMUL = """
import hashlib, torch
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
a, w = torch.randn(1276, 128, generator=g), torch.randn(128, 512, generator=g)
print(hashlib.sha256((a @ w).numpy().tobytes()).hexdigest())
"""


def test_the_preloaded_vendor_answer_decides_whether_mkl_takes_the_avx2_branch(tmp_path):
    """The mechanism ci/setup_env.sh relies on, shown on any vendor: told "not Intel", MKL ignores
    MKL_CBWR=AVX2 (other bits); told "Intel" (the shipped shim), it takes the branch an Intel CPU takes."""
    if not _numerics.supported()[0]:
        pytest.skip(f"{_numerics.supported()[1]}: no AVX2 branch here")
    source = ROOT / "ci" / "mkl_intel_branch.c"
    shims = {}
    for answer in (0, 1):
        c = tmp_path / f"answer{answer}.c"
        c.write_text(source.read_text().replace("return 1;", f"return {answer};"))
        built = subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", str(c.with_suffix(".so")),
                                str(c)], capture_output=True, text=True)
        if built.returncode != 0:
            pytest.skip(f"no C compiler to build the shim: {built.stderr[:200]}")
        shims[answer] = str(c.with_suffix(".so"))
    env = _clean_env(MKL_CBWR="AVX2", ATEN_CPU_CAPABILITY="avx2")
    env.pop("LD_PRELOAD", None)
    got = {}
    for answer, shim in shims.items():
        out = _python(MATMUL, {**env, "LD_PRELOAD": shim})
        assert out.returncode == 0, out.stderr
        got[answer] = out.stdout.strip()
    assert got[0] != got[1], "MKL no longer asks mkl_serv_intel_cpu_true: the AVX2 pin cannot cross vendors"
    if _numerics.cpu_vendor() == "GenuineIntel":  # the shim changes nothing on Intel's CPUs
        assert _python(MATMUL, env).stdout.strip() == got[1]


def test_training_fingerprint_matches_the_committed_value():
    """The committed notebooks were computed on this path: a mismatch here means nbval will differ."""
    ok, why = _numerics.supported()
    if not ok:
        pytest.skip(f"{why}: the pinned numeric path does not exist here (README: Numerics)")
    out = _python(FINGERPRINT_RUN, _clean_env(PYTHONHASHSEED="0"))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    path = "; ".join(f"{k}={v}" for k, v in got["path"].items())
    assert got["weights_sha256_16"] == FINGERPRINT["weights_sha256_16"], (
        f"numeric drift: the fixed 300-step p=113 run gives weights {got['weights_sha256_16']} "
        f"(test loss {got['final_test_loss']!r}), the committed fingerprint is "
        f"{FINGERPRINT['weights_sha256_16']} ({FINGERPRINT['final_test_loss']!r}). Path in force: {path}. "
        f"nbval will see other numbers on this machine; see README: Numerics.")
    assert got["final_test_loss"] == FINGERPRINT["final_test_loss"]


def test_verdict_stability_marks_a_changed_or_missing_line_unstable():
    import importlib.util

    spec = importlib.util.spec_from_file_location("verdict_stability", ROOT / "ci" / "verdict_stability.py")
    vs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vs)
    rows = vs.compare([("grok_step", "4900"), ("grokked", "True"), ("gone", "1")],
                      [("grok_step", "4700"), ("grokked", "True"), ("new", "2")])
    assert rows == [("grok_step", "4900", "4700", False), ("grokked", "True", "True", True),
                    ("gone", "1", "(missing)", False), ("new", "(missing)", "2", False)]
    env = vs.second_env("native")
    assert env["SCIDL_NUMERICS"] == "native" and not any(k in env for k in vs.PINNED)
