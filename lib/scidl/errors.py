"""The one error type scidl raises for input it does not allow, and the checks every entry point
shares: each message names the parameter, the value given and what is allowed."""
from __future__ import annotations

import math
import numbers
from typing import Any


class ScidlError(ValueError):
    """Input that scidl does not allow (a config field, a file, a hook name, ...); the message names
    the parameter, its value and what is allowed. Every scidl error type derives from it."""


def not_allowed(name: str, value: Any, allowed: str) -> str:
    """Return the standard message `name=value is not allowed: allowed`."""
    text = repr(value)
    return f"{name}={text if len(text) <= 200 else text[:200] + '...'} is not allowed: {allowed}"


def describe(x: Any) -> str:
    """Return a short description of a value for an error message (shape and dtype for tensors)."""
    if hasattr(x, "shape") and hasattr(x, "dtype") and getattr(x, "shape", ()) != ():
        return f"tensor(shape={tuple(x.shape)}, dtype={x.dtype})"
    return repr(x)


def scalar(value: Any) -> Any:
    """Return a numpy/torch 0-d scalar as the Python number it holds (anything else unchanged)."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              error: type[ScidlError] = ScidlError) -> int:
    """Return `value` as an int if it is an integer (numpy ones too, never bool) in [low, high]."""
    value = scalar(value)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        bounds = "" if low is None and high is None else (
            f" >= {low}" if high is None else f" <= {high}" if low is None else f" in [{low}, {high}]")
        raise error(not_allowed(name, value, f"must be an integer{bounds}"))
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, error: type[ScidlError] = ScidlError) -> float:
    """Return `value` as a float if it is a finite real number (never bool) in its bounds
    ([low, high], or (low, high] with low_open)."""
    value = scalar(value)
    try:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        ok = False
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rule = "a finite number"
        if low is not None:
            rule += f" {'>' if low_open else '>='} {low:g}"
        if high is not None:
            rule += f"{' and' if low is not None else ''} <= {high:g}"
        raise error(not_allowed(name, value, f"must be {rule}"))
    return float(value)


def check_choice(name: str, value: Any, choices, error: type[ScidlError] = ScidlError) -> str:
    """Return `value` if it is a string among `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise error(not_allowed(name, value, f"must be one of {sorted(choices)}"))
    return value


def check_indices(name: str, values: Any, size: int, error: type[ScidlError] = ScidlError) -> list[int]:
    """Return `values` (one int or a sequence of ints) as a list of ints in [0, size)."""
    items = [values] if isinstance(scalar(values), numbers.Integral) else values
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise error(not_allowed(name, values, f"must be integers in [0, {size})"))
    items = list(items)
    for v in items:
        check_int(name, v, 0, size - 1, error)
    return [int(scalar(v)) for v in items]


def check_type(name: str, value: Any, kind: type | tuple[type, ...], what: str,
               error: type[ScidlError] = ScidlError) -> Any:
    """Return `value` if it is an instance of `kind`, else raise `error` saying it must be `what`."""
    if not isinstance(value, kind):
        raise error(not_allowed(name, value, f"must be {what}"))
    return value


def check_frame(name: str, frame: Any, columns, error: type[ScidlError] = ScidlError) -> None:
    """Raise `error` unless `frame` is a non-empty DataFrame with every column in `columns`."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise error(not_allowed(name, frame if not isinstance(frame, pd.DataFrame) else "an empty DataFrame",
                                f"must be a non-empty DataFrame with columns {list(columns)}"))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(not_allowed(name, f"DataFrame with columns {list(frame.columns)}",
                                f"it lacks the column(s) {missing}"))
