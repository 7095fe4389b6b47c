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


def check_frame(name: str, frame: Any, columns, error: type[ScidlError] = ScidlError, *, numeric=(),
                finite=(), boolean=(), min_rows: int = 1) -> None:
    """Raise `error` unless `frame` is a DataFrame with at least `min_rows` rows and every column in
    `columns`; columns in `numeric` must hold real numbers (not bool, not strings), those in `finite`
    finite ones too, and those in `boolean` bools (dtype bool: strings such as 'no' are not false)."""
    import pandas as pd

    columns = list(dict.fromkeys([*columns, *numeric, *finite, *boolean]))
    if not isinstance(frame, pd.DataFrame) or len(frame) < min_rows:
        shown = frame if not isinstance(frame, pd.DataFrame) else (
            "an empty DataFrame" if frame.empty else f"a DataFrame with {len(frame)} rows")
        rows = "a non-empty DataFrame" if min_rows == 1 else f"a DataFrame with at least {min_rows} rows"
        raise error(not_allowed(name, shown, f"must be {rows} with columns {columns}"))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(not_allowed(name, f"DataFrame with columns {list(frame.columns)[:12]}",
                                f"it lacks the column(s) {missing}"))
    for c in boolean:
        if frame[c].dtype != bool:
            raise error(not_allowed(f"{name}[{c!r}]", f"dtype {frame[c].dtype} ({list(frame[c].iloc[:3])}...)",
                                    "must be of dtype bool"))
    for c in dict.fromkeys([*numeric, *finite]):
        col = frame[c]
        if col.dtype == bool or not pd.api.types.is_numeric_dtype(col):
            raise error(not_allowed(f"{name}[{c!r}]", f"dtype {col.dtype} ({list(col.iloc[:3])}...)",
                                    "must hold real numbers"))
        if c in finite:
            import numpy as np

            values = col.to_numpy(dtype=float)
            bad = values[~np.isfinite(values)]
            if len(bad):
                raise error(not_allowed(f"{name}[{c!r}]", f"{bad[0]} (row {int(np.flatnonzero(~np.isfinite(values))[0])})",
                                        "must be finite"))


def check_bool(name: str, value: Any, error: type[ScidlError] = ScidlError) -> bool:
    """Return `value` if it is a bool (numpy's too); 0, 1, 'no' or None are not bools here."""
    value = scalar(value)
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise error(not_allowed(name, value, "must be True or False"))
    return bool(value)


def check_names(name: str, value: Any, allowed=None, min_len: int = 1,
                error: type[ScidlError] = ScidlError) -> list[str]:
    """Return `value` as a list of distinct strings (a list or tuple; a lone string is refused, not
    split into characters), at least `min_len` of them, each in `allowed` when given."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise error(not_allowed(name, value, "must be a list of names (a lone string is not a list)"))
    if len(value) < min_len or not all(isinstance(v, str) for v in value) or len(set(value)) != len(value):
        raise error(not_allowed(name, value, f"must be at least {min_len} distinct names (strings)"))
    if allowed is not None:
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise error(not_allowed(name, value, f"{unknown} are not among {sorted(allowed)[:12]}"))
    return list(value)


def check_numbers(name: str, values: Any, low: float | None = None, high: float | None = None,
                  low_open: bool = False, min_len: int = 1, error: type[ScidlError] = ScidlError) -> list[float]:
    """Return `values` (a list, tuple or 1-d array; not a string) as a list of finite floats in their
    bounds, at least `min_len` of them."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__") or getattr(values, "ndim", 1) != 1:
        raise error(not_allowed(name, values, "must be a list of numbers"))
    values = list(values)
    if len(values) < min_len:
        raise error(not_allowed(name, values, f"must hold at least {min_len} number(s)"))
    return [check_number(f"{name}[{i}]", v, low, high, low_open, error) for i, v in enumerate(values)]


def check_mapping(name: str, value: Any, what: str, min_len: int = 0, error: type[ScidlError] = ScidlError) -> dict:
    """Return `value` as a dict if it is a mapping with at least `min_len` items, else raise `error`."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping) or len(value) < min_len:
        raise error(not_allowed(name, value, f"must be {what}"))
    return dict(value)


def check_callable(name: str, value: Any, what: str, error: type[ScidlError] = ScidlError) -> Any:
    """Return `value` if it can be called, else raise `error` saying it must be `what`."""
    if not callable(value):
        raise error(not_allowed(name, value, f"must be {what}"))
    return value
