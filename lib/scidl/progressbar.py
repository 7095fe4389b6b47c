"""Progress bars on scidl's long loops (training, ensembles, sweeps, progress-measure passes).

A bar is tqdm's: a widget in JupyterLab, text in a terminal. It is silent when the caller passes
`progress=False`, under `CI=true` (where it would only clutter logs) and when `SCIDL_PROGRESS=0`;
`SCIDL_PROGRESS=1` turns bars on even under CI. The main job and nbval run their kernels with
`SCIDL_PROGRESS=0`, so executed and committed notebooks carry no bar outputs.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm

_FALSE = {"", "0", "false", "no", "off"}


def progress_enabled(progress: bool = True) -> bool:
    """Return whether a loop asked to show progress (`progress`) should draw a bar here."""
    if not progress:
        return False
    forced = os.environ.get("SCIDL_PROGRESS", "").strip().lower()
    if forced:
        return forced not in _FALSE
    return os.environ.get("CI", "").strip().lower() in _FALSE


def bar(iterable=None, *, total: int | None = None, desc: str | None = None,
        progress: bool = True, **kwargs) -> tqdm:
    """Return a tqdm bar over `iterable` (or of `total` steps), disabled as `progress_enabled` says."""
    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(progress),
                mininterval=kwargs.pop("mininterval", 1.0), **kwargs)
