"""Checks of a notebook's papermill parameters, run in the first cell after the parameters cell.

The parameters cell declares each parameter with a type annotation (`p: int = 113  # ...`), so the
kernel's `__annotations__` lists them. papermill injects its values as a cell of plain assignments
that starts with `# Parameters`; `check_parameters` finds that cell in the kernel's input history,
refuses any name the notebook does not declare (papermill itself only warns, then runs the full
default job), any value whose type is not the declared one, and any value outside the allowed values
its comment declares (`# ...; allowed: at least 3; prime`, see `parse_rule`), before anything runs.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import math
import numbers
import re
import tokenize
import types
import typing
from typing import Any, Callable

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


def check_parameters(namespace: dict[str, Any], source: str | None = None) -> None:
    """Raise ConfigError for a papermill parameter the notebook does not declare (naming it and
    listing the declared ones), a parameter whose value is not of its declared type, or one outside
    the allowed values its comment declares. `source` is the parameters cell (default: found in the
    kernel's input history)."""
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
    rules = declared_rules(parameters_source(namespace) if source is None else source)
    for name, checks in rules.items():
        if name in namespace:
            for rule in checks:
                if not rule.holds(namespace[name]):
                    allowed = "; ".join(r.text for r in checks)
                    raise ConfigError(not_allowed(f"parameter {name}", namespace[name],
                                                  f"fails '{rule.text}' (allowed: {allowed})"))


# ---- allowed values, declared once in the parameters cell's comments --------------------------------------------
#
# A parameter's comment may end with `allowed: RULE; RULE; ...` (no '=' anywhere: papermill skips a line with a second
# one). `papermill --help-notebook` shows it as part of the help, and check_parameters enforces it. A rule applies to
# the value, or to every element of a list value, except the list rules (`non-empty`, `distinct`, `N to M items`):
#   at least X | at most X | above X | below X | X to Y      bounds (X to Y is inclusive)
#   prime | multiple of N | seed (an integer in [0, 2**32 - 1])
#   one of a, b, "" (strings as written, "" the empty string; numbers compared as numbers)
#   non-empty | distinct | N to M items | at least N items
ALLOWED_MARK = "allowed:"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"


@dataclasses.dataclass(frozen=True)
class Rule:
    """One allowed-values rule of a notebook parameter: `text` as written, `test` on one value."""

    text: str
    test: Callable[[Any], bool] = dataclasses.field(repr=False)
    on_list: bool = False  # applies to the list itself, not to each element

    def holds(self, value: Any) -> bool:
        if self.on_list or not isinstance(value, (list, tuple)):
            return self.test(value)
        return all(self.test(v) for v in value)


def _number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _prime(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _word(token: str) -> Any:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return float(token) if re.fullmatch(_NUMBER, token) else token


def parse_rule(text: str) -> Rule:
    """Return the Rule a rule's text declares; ConfigError naming the text when it is no known rule."""
    from scidl.config import SEED_MAX

    t = " ".join(text.split())
    num = lambda s: float(s)  # noqa: E731
    patterns: list[tuple[str, Callable[..., Rule]]] = [
        (rf"at least ({_NUMBER}) items", lambda n: Rule(t, lambda v: _sized(v) and len(v) >= num(n), True)),
        (rf"({_NUMBER}) to ({_NUMBER}) items",
         lambda a, b: Rule(t, lambda v: _sized(v) and num(a) <= len(v) <= num(b), True)),
        (rf"at least ({_NUMBER})", lambda x: Rule(t, lambda v: _number(v) and v >= num(x))),
        (rf"at most ({_NUMBER})", lambda x: Rule(t, lambda v: _number(v) and v <= num(x))),
        (rf"above ({_NUMBER})", lambda x: Rule(t, lambda v: _number(v) and v > num(x))),
        (rf"below ({_NUMBER})", lambda x: Rule(t, lambda v: _number(v) and v < num(x))),
        (rf"({_NUMBER}) to ({_NUMBER})", lambda a, b: Rule(t, lambda v: _number(v) and num(a) <= v <= num(b))),
        (rf"multiple of ({_NUMBER})", lambda n: Rule(t, lambda v: _number(v) and v % num(n) == 0)),
        (r"prime", lambda: Rule(t, _prime)),
        (r"seed", lambda: Rule(t, lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= SEED_MAX)),
        (r"non-empty", lambda: Rule(t, lambda v: _sized(v) and len(v) > 0, True)),
        (r"distinct", lambda: Rule(t, lambda v: _sized(v) and len(set(map(repr, v))) == len(v), True)),
        (r"one of (.+)", lambda rest: _one_of(t, [_word(w) for w in rest.split(",")])),
    ]
    for pattern, make in patterns:
        m = re.fullmatch(pattern, t)
        if m:
            return make(*m.groups())
    raise ConfigError(not_allowed("allowed-values rule", text, "must be one of: at least X, at most X, above X, "
                                  "below X, X to Y, multiple of N, prime, seed, one of a, b, ..., non-empty, "
                                  "distinct, N to M items, at least N items"))


def _sized(v: Any) -> bool:
    return isinstance(v, (list, tuple, str))


def _one_of(text: str, choices: list[Any]) -> Rule:
    def test(v: Any) -> bool:
        if _number(v):
            return any(_number(c) and v == c for c in choices)
        return isinstance(v, str) and v in [c for c in choices if isinstance(c, str)]
    return Rule(text, test)


def declared_rules(source: str) -> dict[str, tuple[Rule, ...]]:
    """Return {parameter: rules} from a parameters cell's source: the `allowed: ...` end of each
    annotated assignment's comment (a parameter without one has no rules)."""
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    rules: dict[str, tuple[Rule, ...]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment = comments.get(node.end_lineno, "")
            if ALLOWED_MARK in comment:
                spec = comment.rsplit(ALLOWED_MARK, 1)[1]
                rules[node.target.id] = tuple(parse_rule(r) for r in spec.split(";") if r.strip())
    return rules


def parameters_source(namespace: dict[str, Any]) -> str:
    """Return the source of the parameters cell from the kernel's input history: the cell that
    declares (annotated assignments) the most of the namespace's annotated names."""
    declared = set(namespace.get("__annotations__", {}))
    best, count = "", 0
    for source in namespace.get("In", []) or []:
        if not isinstance(source, str) or source.lstrip().startswith(INJECTED_HEADER):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        n = sum(isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.target.id in declared
                for s in tree.body)
        if n > count:
            best, count = source, n
    return best
