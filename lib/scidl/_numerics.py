"""One numeric code path on every x86-64 CPU with AVX2, so that a config trains to the same bits on an
Intel Xeon with AVX-512 and AMX and on an AMD EPYC with AVX2 only.

Imported by `scidl/__init__.py` before torch, and run by `ci/setup_env.sh` (`python _numerics.py
--exports`) so that every command of the suite, notebook kernels included, starts on the same path.
A value the user already set is kept. `SCIDL_NUMERICS=native` turns the pins off (each library then
takes the fastest path of the CPU it runs on, and the committed notebook outputs are not reproduced).

Why each pin (measured by hashing every op of a p=113 training run natively on an AVX-512 Xeon and
on an AMD EPYC-Milan CPU model under `qemu-x86_64 -cpu EPYC-Milan`; README: Numerics):
- `MKL_CBWR=AVX2`: MKL's matrix products follow the CPU unless pinned. But MKL honours the AVX2
  branch only where it believes the CPU is Intel's; elsewhere it silently runs AUTO. So
  `ci/setup_env.sh` also preloads `ci/mkl_intel_branch.c`, which answers MKL's vendor question with
  "Intel": then an AMD CPU runs the very AVX2 code an Intel CPU runs (a no-op on Intel). Without it
  (a plain `python` on an AMD host) `describe()` says the path is not the pinned one.
  (MKL's COMPATIBLE branch needs no preload but is SSE2: 2.7x slower per training step here, and its
  vector math still differs between vendors.)
- `ATEN_CPU_CAPABILITY=avx2`: PyTorch's own vectorised kernels (elementwise ops, reductions, softmax,
  the normal sampler of every weight initialisation) exist in AVX2 and AVX-512 builds whose results
  differ in the last bits.
- `ONEDNN_MAX_CPU_ISA=AVX2`: oneDNN (convolutions, GELU) compiles for the widest ISA it finds.
- `OPENBLAS_CORETYPE=Haswell`: the OpenBLAS inside numpy and scipy (least squares, fits) picks its
  kernels by CPU model; Haswell's are the AVX2 ones every AVX2 CPU can run.
What no pin fixes: some of MKL's vector math (float64 `torch.sqrt` and `torch.log`, `asin`, `acos`,
`log10`, ...) and oneDNN's float32 GELU use approximate instructions whose bits differ between
vendors. Training never calls them: AdamW is torch's fused CPU kernel (an exact vectorised sqrt),
the grokking step takes its softmax from ATen, weight norms use Python's sqrt.

Where bit-identity ends: a CPU without AVX2 (or FMA), or a machine that is not x86-64 (Apple silicon,
ARM servers), runs other code; there `supported()` says why, the library still works, and the test
command says that nbval's numbers cannot match rather than failing with a wall of diffs.
"""
from __future__ import annotations

import os
import platform
import sys

MODE_VARIABLE = "SCIDL_NUMERICS"
MODES = ("portable", "native")
PINS = {
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
NEEDED_FLAGS = ("avx2", "fma")
SHIM = "scidl_mkl_intel_branch.so"  # built from ci/mkl_intel_branch.c by ci/setup_env.sh


def cpu_flags() -> set[str]:
    """Return the CPU's feature flags from /proc/cpuinfo (an empty set where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_vendor() -> str:
    """Return the CPU vendor string (GenuineIntel, AuthenticAMD, ...) or the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"


def mode() -> str:
    """Return SCIDL_NUMERICS ("portable" unless set), refusing any other value."""
    value = os.environ.get(MODE_VARIABLE, "portable")
    if value not in MODES:
        raise ValueError(f"{MODE_VARIABLE}={value!r} is not allowed: one of {', '.join(MODES)} "
                         f"(portable: the pinned path that reproduces the committed outputs; native: "
                         f"each library's fastest path for this CPU)")
    return value


def supported() -> tuple[bool, str]:
    """Return whether this machine can run the pinned path, and why not where it cannot."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return False, f"this machine is {platform.machine()}, not x86-64"
    missing = [f for f in NEEDED_FLAGS if f not in cpu_flags()]
    if missing:
        return False, f"this x86-64 CPU lacks {' and '.join(m.upper() for m in missing)}"
    return True, ""


def pins() -> dict[str, str]:
    """Return the variables the pinned path sets here ({} in native mode or on an unsupported CPU)."""
    return dict(PINS) if mode() == "portable" and supported()[0] else {}


def pin_numeric_path(environ=None) -> dict[str, str]:
    """Set each pin in `environ` (os.environ) unless it is already set; return what is now in force.
    Must run before torch's first kernel (ATen and MKL read their variables once)."""
    environ = os.environ if environ is None else environ
    for name, value in pins().items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in PINS if name in environ}


def mkl_vendor_check() -> str:
    """How MKL's "is this an Intel CPU?" is answered here: by the CPU, or by the preloaded shim."""
    if cpu_vendor() == "GenuineIntel":
        return "Intel CPU"
    try:
        with open("/proc/self/maps") as f:
            if SHIM in f.read():
                return "answered by the preloaded shim"
    except OSError:
        pass
    return f"not overridden ({cpu_vendor()}): MKL ignores MKL_CBWR=AVX2 and runs AUTO; run under ci/setup_env.sh"


def on_pinned_path() -> bool:
    """Whether every pin holds its pinned value in this process (a user's own value breaks it, and so
    does torch imported and used before scidl, which fixes ATen's capability too early)."""
    return not why_not_pinned()


def describe() -> dict[str, str]:
    """Return the numeric path in force: machine, vendor, the flags that matter, each variable and,
    where torch is imported, ATen's capability and the thread count."""
    flags = cpu_flags()
    out = {"machine": platform.machine(), "vendor": cpu_vendor(),
           "flags": " ".join(f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags) or "-",
           "mode": os.environ.get(MODE_VARIABLE, "portable"),
           **{k: os.environ.get(k, "(unset)") for k in PINS}, "mkl_vendor_check": mkl_vendor_check()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
        out["threads"] = str(torch.get_num_threads())
    why = why_not_pinned()
    out["pinned_path"] = f"no ({why})" if why else "yes"
    return out


def why_not_pinned() -> str:
    """Say why this process is not on the pinned path ("" where it is)."""
    ok, why = supported()
    if not ok:
        return why
    check = mkl_vendor_check()
    if check.startswith("not"):
        return f"MKL's vendor check is {check}"
    if any(os.environ.get(k) != v for k, v in PINS.items()):
        if os.environ.get(MODE_VARIABLE, "portable") != "portable":
            return f"{MODE_VARIABLE}={os.environ[MODE_VARIABLE]}"
        return "pins set to other values: " + ", ".join(f"{k}={os.environ.get(k)}" for k, v in PINS.items()
                                                         if os.environ.get(k) != v)
    torch = sys.modules.get("torch")
    if torch is not None and torch.backends.cpu.get_cpu_capability() != "AVX2":
        return f"torch was imported before scidl (ATen capability {torch.backends.cpu.get_cpu_capability()})"
    return ""


def _main(argv: list[str]) -> int:
    if argv == ["--exports"]:  # for ci/setup_env.sh: `eval "$(python _numerics.py --exports)"`
        print(f'NUMERIC_PIN_NAMES="{" ".join(PINS)}"')  # what ci/test.sh unsets for the native path
        for name, value in pins().items():
            print(f'export {name}="${{{name}:-{value}}}"')
        ok, why = supported()
        if not ok:
            print(f"echo '[setup] note: {why}, so training takes another numeric path than the committed "
                  f"notebooks; the library tests run, nbval is skipped (README: Numerics)' >&2")
        return 0
    if argv == ["--pinned"]:  # for ci/test.sh: exit 0 on the pinned path, else say why not
        why = why_not_pinned()
        print(why, end="\n" if why else "")
        return 1 if why else 0
    if argv == ["--describe"]:
        pin_numeric_path()
        for k, v in describe().items():
            print(f"{k} = {v}")
        return 0
    print("usage: python _numerics.py --exports | --pinned | --describe", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except ValueError as e:
        print(f"[setup] {e}", file=sys.stderr)
        sys.exit(2)
