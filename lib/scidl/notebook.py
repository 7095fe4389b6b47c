"""Checks of a notebook's papermill parameters, run in the first cell after the parameters cell.

The parameters cell declares each parameter with a type annotation (`p: int = 113  # ...`), so the
kernel's `__annotations__` lists them. papermill injects its values as a cell of plain assignments
that starts with `# Parameters`; `check_parameters` finds that cell in the kernel's input history,
refuses any name the notebook does not declare (papermill itself only warns, then runs the full
default job) and any value whose type is not the declared one.
"""
from __future__ import annotations

import ast
import math
import types
import typing
from typing import Any

from scidl.config import ConfigError
from scidl.errors import not_allowed

INJECTED_HEADER = "# Parameters"  # how papermill's Python translator starts the injected cell


def injected_names(history: list[str]) -> list[str]:
    """Return the names assigned by the last papermill-injected parameters cell in `history`."""
    for source in reversed(history or []):
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_HEADER):
            try:
                tree = ast.parse(source)
            except SyntaxError as e:
                raise ConfigError(f"injected parameters cell={source!r} is not allowed: not valid Python "
                                  f"({e.msg}, line {e.lineno}); check the -p / -y values") from None
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def _matches(value: Any, kind: Any) -> bool:
    """Return whether `value` has the declared type `kind` (int, float, str, bool, list[...], dict)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value) if args \
            else isinstance(value, (list, tuple))
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _resolve(kind: Any, namespace: dict[str, Any]) -> Any:
    """Return the type an annotation names (string annotations, as under `from __future__ import
    annotations`, are evaluated; one that cannot be is not checked)."""
    if not isinstance(kind, str):
        return kind
    try:
        return eval(kind, {"__builtins__": {}, "list": list, "dict": dict, "tuple": tuple, "int": int, "float": float,
                           "str": str, "bool": bool, "None": None})
    except Exception:
        return object


def _name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")


def check_parameters(namespace: dict[str, Any]) -> None:
    """Raise ConfigError for a papermill parameter the notebook does not declare (naming it and
    listing the declared ones) or a parameter whose value is not of its declared type."""
    declared = {name: _resolve(kind, namespace) for name, kind in namespace.get("__annotations__", {}).items()}
    unknown = [n for n in injected_names(namespace.get("In", [])) if n not in declared]
    if unknown:
        name = unknown[0]
        raise ConfigError(not_allowed(f"parameter {name}", namespace.get(name),
                                      f"this notebook has no such parameter; its parameters are "
                                      f"{sorted(declared)}"))
    for name, kind in declared.items():
        if name in namespace and not _matches(namespace[name], kind):
            raise ConfigError(not_allowed(f"parameter {name}", namespace[name], f"must be {_name(kind)}"))
