"""Pin MKL to one code path so that a config trains to the same bits on every AVX-512 machine.

Imported by `scidl/__init__.py` before torch. With MKL's default (`MKL_CBWR=AUTO`) the blocking of
a large float32 matmul depends on the CPU's cache sizes, so two AVX-512 Xeons of different
generations sum in different orders and a chaotic training run (grokking) drifts apart after
thousands of steps: the committed notebook outputs, which nbval compares, would then hold only on
the machine that wrote them. `MKL_CBWR=AVX512` (Intel's Conditional Numerical Reproducibility) fixes
the code path; measured here it costs nothing (it is the path AUTO picks on this machine). MKL reads
the variable at its first call, so it must be set before any matmul; `ci/setup_env.sh` exports it
for every command, and warns on a CPU without AVX-512, where MKL takes another path and the
committed outputs are not reproduced bit for bit. A value already set is kept.
"""
from __future__ import annotations

import os

PINNED_BRANCH = "AVX512"


def has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


def pin_mkl_branch() -> None:
    if has_avx512():
        os.environ.setdefault("MKL_CBWR", PINNED_BRANCH)

