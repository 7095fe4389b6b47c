"""Preregistered hypotheses and their tamper-evident ledger.

A Hypothesis (claim, measurement, predicted side of a threshold, falsifier, controls, the config
scope its evidence must come from) is registered *before* any evidence and is immutable from then
on: a changed claim is a new id that `refines` the old one. Evidence is one value per run, from runs
started after registration that did not inspire the hypothesis. The verdict compares an exact
confidence interval (t for means, Clopper-Pearson for proportions) with the threshold, and is only
'supported' when every control behaves as predicted too.

The ledger is a JSON-lines hash chain: each record carries `seq`, the previous record's `hash` as
`prev`, and its own `hash` (sha256 of its canonical JSON without `hash`), so an edited, removed,
inserted or reordered line is detected by `Ledger.verify()` (and by every read). Every
read-check-append runs under an exclusive `flock` on `<ledger>.lock`.

A chain alone cannot stop an editor who edits a line and recomputes every hash after it. Anchors kept
outside the file can: `Ledger.anchor()` (the number of records and the last hash, to commit or send
on) and each hypothesis's `content_hash` (printed when registered, and in the committed notebook
outputs that nbval compares). `verify(anchor=..., hypotheses=...)` refuses a chain whose first n
records are not the anchored ones, or whose registration of an anchored hypothesis has other content,
however consistently its hashes were recomputed. They cannot stop a rewrite of the anchor itself (its
copy in git or in a committed output), and an anchor says nothing about records appended after it.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import math
import numbers
import os
import statistics
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats
from scidl.errors import ScidlError

COMPARISONS = {">": lambda x, t: x > t, "<": lambda x, t: x < t}
STATISTICS = ("mean", "proportion")
MAIN = "main"


class LedgerError(ScidlError):
    """A ledger rule was broken (editing a recorded prediction, evidence before registration, ...)."""


class LedgerWarning(UserWarning):
    """The ledger has a torn last line (an interrupted append); it is ignored and repaired."""


# ---------------------------------------------------------------- validation helpers


def _bad(owner: str, name: str, value: Any, allowed: str) -> LedgerError:
    """Return the LedgerError for `owner.name=value` with what is allowed."""
    return LedgerError(f"{owner}.{name}={value!r} is not allowed: {allowed}")


def _text(owner: str, name: str, value: Any) -> str:
    """Return `value` if it is a non-empty string, else raise LedgerError."""
    if not isinstance(value, str) or not value.strip():
        raise _bad(owner, name, value, "must be a non-empty string")
    return value


def _finite(owner: str, name: str, value: Any) -> float:
    """Return `value` as a float if it is a finite real number (numpy scalars too, not bool)."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise _bad(owner, name, value, "must be a finite real number")
    return float(value)


def _comparison(owner: str, value: Any) -> str:
    """Return `value` if it is one of COMPARISONS, else raise LedgerError."""
    if not isinstance(value, str) or value not in COMPARISONS:
        raise _bad(owner, "comparison", value, "use '>' or '<'")
    return value


def _scalar(owner: str, key: str, value: Any) -> Any:
    """Return `value` as a JSON scalar (str, finite number, bool, None), else raise LedgerError."""
    value = value.item() if isinstance(value, np.generic) else value
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return value
    raise _bad(owner, f"scope[{key!r}]", value, "must be a JSON scalar (str, finite number, bool, None)")


def _scope(value: Any) -> tuple[tuple[str, Any], ...]:
    """Return a scope mapping (or tuple of pairs) as a sorted tuple of (field, JSON scalar) pairs."""
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(pairs, (tuple, list)) or not all(isinstance(p, (tuple, list)) and len(p) == 2
                                                       for p in pairs):
        raise _bad("Hypothesis", "scope", value, "must be a mapping of flat config fields to values")
    keys = [_text("Hypothesis", "scope key", k) for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _bad("Hypothesis", "scope", value, "each config field may appear once")
    unknown = sorted(set(keys) - _config_fields())
    if unknown:  # a misspelt field would put every run out of scope: no evidence could ever count
        raise _bad("Hypothesis", "scope key", unknown[0], f"must be a flat config field, e.g. "
                   f"{sorted(_config_fields())[:6]} (any phenomenon's: see RunConfig.flat())")
    return tuple(sorted((k, _scalar("Hypothesis", k, v)) for k, v in pairs))


def _config_fields() -> set[str]:
    """Return every flat config field of every registered phenomenon (`RunConfig.flat()` keys)."""
    from scidl.registry import PHENOMENA

    return set(_fields_of(tuple(sorted(PHENOMENA))))


@functools.lru_cache(maxsize=4)
def _fields_of(kinds: tuple[str, ...]) -> frozenset[str]:
    """The flat config fields of these phenomena, built once per set of kinds (every Hypothesis read
    from a ledger checks its scope against them)."""
    from scidl.config import make_config

    return frozenset(k for kind in kinds for k in make_config(kind=kind).flat())


def _controls(value: Any) -> tuple[Control, ...]:
    """Return `value` as a tuple of Controls with unique names other than 'main'."""
    if not isinstance(value, (tuple, list)) or not all(isinstance(c, Control) for c in value):
        raise _bad("Hypothesis", "controls", value, "must be a tuple or list of Control objects")
    names = [c.name for c in value]
    if len(set(names)) != len(names) or MAIN in names:
        raise _bad("Hypothesis", "controls", names, f"control names must be unique and not {MAIN!r}")
    return tuple(value)


# ---------------------------------------------------------------- hypotheses


@dataclass(frozen=True)
class Control:
    """A prediction about a control condition: its measure (a mean over runs) `comparison`
    `threshold`. Its evidence is recorded with condition=name."""

    name: str
    claim: str
    comparison: str
    threshold: float

    def __post_init__(self) -> None:
        _text("Control", "name", self.name)
        if not isinstance(self.claim, str):
            raise _bad("Control", "claim", self.claim, "must be a string")
        _comparison("Control", self.comparison)
        object.__setattr__(self, "threshold", _finite("Control", "threshold", self.threshold))


@dataclass(frozen=True)
class Hypothesis:
    """A precise, testable claim: `measurement` per run, predicted `comparison` `threshold`, judged
    by the interval of its `statistic` ('mean', or 'proportion' of 0/1 values) over runs in `scope`."""

    id: str
    claim: str
    measurement: str  # what is measured, per run, in words precise enough to re-implement
    comparison: str  # ">" or "<": the predicted side of the threshold
    threshold: float
    falsifier: str  # the result that refutes the claim
    controls: tuple[Control, ...] = ()
    refines: str | None = None  # id of the hypothesis this one refines
    scope: Mapping[str, Any] = field(default_factory=dict)  # flat config fields evidence must match
    statistic: str = "mean"

    def __post_init__(self) -> None:
        for name in ("id", "claim", "measurement", "falsifier"):
            _text("Hypothesis", name, getattr(self, name))
        _comparison("Hypothesis", self.comparison)
        object.__setattr__(self, "threshold", _finite("Hypothesis", "threshold", self.threshold))
        object.__setattr__(self, "controls", _controls(self.controls))
        if self.refines is not None:
            _text("Hypothesis", "refines", self.refines)
        object.__setattr__(self, "scope", _scope(self.scope))
        if self.statistic not in STATISTICS:
            raise _bad("Hypothesis", "statistic", self.statistic, "use 'mean' or 'proportion'")
        if self.statistic == "proportion" and not 0 <= self.threshold <= 1:
            raise _bad("Hypothesis", "threshold", self.threshold, "a proportion's threshold lies in [0, 1]")

    @property
    def prediction(self) -> str:
        """Return the predicted side, e.g. '> 2'."""
        return f"{self.comparison} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready data (controls as dicts, scope as a dict)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["controls"] = [{k: getattr(c, k) for k in c.__dataclass_fields__} for c in self.controls]
        d["scope"] = dict(self.scope)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hypothesis:
        """Return the Hypothesis stored in a ledger record (extra keys ignored); LedgerError if the
        record lacks a field."""
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise LedgerError(f"hypothesis record {d.get('id', '?')!r} (seq {d.get('seq', '?')}) lacks the "
                              f"field(s) {missing}: not a registration written by Ledger.register")
        fields = {k: d[k] for k in cls.__dataclass_fields__}
        fields["controls"] = tuple(Control(**c) for c in d["controls"])
        return cls(**fields)

    @property
    def content_hash(self) -> str:
        """Return the first 16 hex digits of the sha256 of the canonical JSON of the fields."""
        return _sha256(self.to_dict())[:16]


# ---------------------------------------------------------------- statistics


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Return (mean, low, high): the two-sided `level` t-interval of the mean (exact quantile,
    df = n - 1); fewer than 2 values give (mean, -inf, inf) (mean is nan for none)."""
    _level(level)
    values = [_finite("mean_ci", "values[]", v) for v in values]
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    if n < 2:
        return mean, -math.inf, math.inf
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def proportion_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Return (proportion, low, high): the exact two-sided Clopper-Pearson `level` interval of
    `successes` out of `n`; n = 0 gives (nan, 0, 1)."""
    _level(level)
    for name, v in (("successes", successes), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise _bad("proportion_ci", name, v, "must be an integer")
    if not 0 <= successes <= n:
        raise LedgerError(f"successes={successes!r} is not allowed: must be in 0..n={n}")
    if n == 0:
        return math.nan, 0.0, 1.0
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(stats.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return successes / n, low, high


def _level(level: Any) -> None:
    """Raise LedgerError unless `level` is a confidence level strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise _bad("interval", "level", level, "must be a number strictly between 0 and 1")


def judge(comparison: str, threshold: float, low: float, high: float) -> str:
    """Return 'supported' if the whole interval lies strictly on the predicted side of `threshold`,
    'refuted' if it lies wholly strictly on the other side, else 'inconclusive'."""
    predicted = COMPARISONS[_comparison("judge", comparison)]
    _finite("judge", "threshold", threshold)
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or math.isnan(v):
            raise _bad("judge", name, v, "must be a number (±inf allowed), not NaN")
    if predicted(low, threshold) and predicted(high, threshold):
        return "supported"
    if predicted(threshold, low) and predicted(threshold, high):
        return "refuted"
    return "inconclusive"


def _summary(values: list[float], statistic: str, comparison: str, threshold: float) -> dict[str, Any]:
    """Return n, mean, ci_low, ci_high and the verdict ('untested' without values) of `values`."""
    if statistic == "proportion":
        mean, low, high = proportion_ci(int(sum(values)), len(values))
    else:
        mean, low, high = mean_ci(values)
    verdict = judge(comparison, threshold, low, high) if values else "untested"
    return {"n": len(values), "mean": mean, "ci_low": low, "ci_high": high, "verdict": verdict}


def p_value(values: list[float], statistic: str, comparison: str, threshold: float) -> float:
    """Return the one-sided p-value of the main statistic against `threshold` in the predicted
    direction: exact binomial for a proportion, Student's t for a mean (1.0 with fewer than two
    values, or a constant sample not on the predicted side; 0.0 for a constant sample on it). Its
    complement of the two-sided 95 % interval's verdict: 'supported' <=> p < 0.025."""
    predicted = COMPARISONS[_comparison("p_value", comparison)]
    values = [_finite("p_value", "values[]", v) for v in values]
    n = len(values)
    if statistic == "proportion":
        if n == 0:
            return 1.0
        k = int(sum(values))
        return float(stats.binom.sf(k - 1, n, threshold) if comparison == ">" else stats.binom.cdf(k, n, threshold))
    if n < 2:
        return 1.0
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    if sd == 0:
        return 0.0 if predicted(mean, threshold) else 1.0
    t = (mean - threshold) / (sd / math.sqrt(n))
    return float(stats.t.sf(t, n - 1) if comparison == ">" else stats.t.cdf(t, n - 1))


def holm(p_values: Mapping[str, float], alpha: float = 0.025) -> dict[str, bool]:
    """Return, per claim, whether Holm's step-down procedure rejects its null at family-wise `alpha`:
    the i-th smallest of m p-values must be <= alpha / (m - i), and every smaller one rejected too."""
    _level(1 - alpha)
    out, going = {}, True
    ranked = sorted(p_values, key=lambda k: (p_values[k], k))
    for i, hid in enumerate(ranked):
        going = going and p_values[hid] <= alpha / (len(ranked) - i)
        out[hid] = going
    return out


# ---------------------------------------------------------------- ledger file


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha256(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()


def _strict(obj: Any) -> Any:
    """Return `obj` with non-finite floats (nested in dicts) replaced by None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _time(text: Any, what: str) -> datetime:
    """Return the timezone-aware datetime of an ISO-8601 string, else raise LedgerError."""
    try:
        t = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        t = None
    if t is None or t.tzinfo is None:
        raise LedgerError(f"{what}={text!r} is not allowed: must be an ISO-8601 time with timezone")
    return t


def scope_of(config: Any, vary: tuple[str, ...] = ("train.seed", "task.data_seed")) -> dict[str, Any]:
    """Return the scope of a hypothesis about `config`: every scalar flat field except those in
    `vary` (by default the seeds), so evidence must come from runs of exactly that experiment. Fields
    added to the configs after hypotheses were first registered are left out while at their defaults
    (config.SCOPE_OMITTED_DEFAULTS), so an old scope, and its hypothesis' content hash, is unchanged."""
    from scidl.config import SCOPE_OMITTED_DEFAULTS

    if not hasattr(config, "flat"):
        raise _bad("scope_of", "config", config, "must be a RunConfig")
    return {k: v for k, v in config.flat().items()
            if k not in vary and (v is None or isinstance(v, (str, int, float, bool)))
            and not (k in SCOPE_OMITTED_DEFAULTS and v == SCOPE_OMITTED_DEFAULTS[k])}


def default_ledger_path() -> Path:
    """Return $SCIDL_LEDGER, else ledger.jsonl inside the run store (data/runs/ in a checkout).

    The ledger lives beside the runs its evidence names, since evidence is checked against their
    start times. data/ledger.jsonl, the project's committed research record, is only written by
    passing its path on purpose.
    """
    if os.environ.get("SCIDL_LEDGER"):
        return Path(os.environ["SCIDL_LEDGER"])
    from scidl.store import default_root

    return default_root() / "ledger.jsonl"


class _Snapshot(NamedTuple):
    records: list[dict[str, Any]]
    size: int  # bytes of the intact prefix (without a torn last line)


@dataclass
class Ledger:
    """An append-only, hash-chained JSON-lines ledger of hypotheses, evidence and verdicts."""

    path: Path = field(default_factory=default_ledger_path)

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise _bad("Ledger", "path", self.path, "must be a file path")
        self.path = Path(self.path)
        if self.path.is_dir():
            raise _bad("Ledger", "path", str(self.path), "is a folder; give the ledger file, e.g. <folder>/ledger.jsonl")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # ---- reading

    def _parse(self, data: bytes) -> _Snapshot:
        """Return the records and intact size of `data`; warn about a torn last line."""
        *lines, tail = data.split(b"\n")
        records, size = [], 0
        for i, raw in enumerate(lines, 1):  # complete lines: any bad one is an edit, never a tear
            rec = _json_object(raw)
            if rec is None:
                raise LedgerError(f"ledger {self.path} line {i}: not a JSON object (edited or corrupted)")
            records.append(rec)
            size += len(raw) + 1
        return self._torn(records, size, len(lines) + 1) if tail else _Snapshot(records, size)

    def _torn(self, records: list[dict[str, Any]], size: int, line: int) -> _Snapshot:
        """Warn about the torn last `line` and return the records before it."""
        warnings.warn(LedgerWarning(
            f"ledger {self.path} line {line}: torn last line (interrupted append?); ignored, the "
            f"next append removes it"), stacklevel=2)
        return _Snapshot(records, size)

    def _check_chain(self, records: list[dict[str, Any]]) -> None:
        """Raise LedgerError naming the first line whose seq, prev or hash breaks the chain."""
        prev = ""
        for i, rec in enumerate(records):
            where = f"ledger {self.path} line {i + 1}"
            if "hash" not in rec:
                raise LedgerError(f"{where}: no 'hash' (old unchained ledger format?): start a new "
                                  f"ledger file; this one cannot be verified")
            if _sha256({k: v for k, v in rec.items() if k != "hash"}) != rec["hash"]:
                raise LedgerError(f"{where}: hash mismatch (edited?)")
            if rec.get("seq") != i or rec.get("prev") != prev:
                raise LedgerError(f"{where}: seq={rec.get('seq')!r} / prev do not follow line {i} "
                                  f"(a line removed, inserted or reordered?)")
            prev = rec["hash"]

    def _read(self) -> _Snapshot:
        """Return the verified records and intact size (call under the lock)."""
        snap = self._parse(self.path.read_bytes() if self.path.exists() else b"")
        self._check_chain(snap.records)
        return snap

    @contextmanager
    def _shared(self) -> Iterator[list[dict[str, Any]]]:
        """Yield the verified records under a shared lock (no lock, nor lock file, if none exists)."""
        if not self.lock_path.exists():
            yield self._read().records
            return
        with open(self.lock_path) as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield self._read().records

    @contextmanager
    def _exclusive(self) -> Iterator[_Snapshot]:
        """Yield the verified snapshot under the exclusive lock; appends go through _append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._read()

    def _append(self, snap: _Snapshot, body: dict[str, Any]) -> dict[str, Any]:
        """Chain `body` after `snap`, cut a torn tail, write it as one line (write + fsync); return it."""
        rec = {**body, "seq": len(snap.records), "prev": snap.records[-1]["hash"] if snap.records else ""}
        rec["hash"] = _sha256(rec)
        if self.path.exists() and self.path.stat().st_size != snap.size:
            os.truncate(self.path, snap.size)
        with open(self.path, "ab") as f:
            f.write((_canonical(rec) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        return rec

    def verify(self, anchor: Any = None, hypotheses: Mapping[str, str] | None = None) -> int:
        """Return the number of records after checking the whole hash chain (LedgerError names the
        first broken line; a torn last line only warns) and the anchors kept outside the file:
        `anchor` ({"records": n, "hash": h} from `anchor()`, or the path of a file `save_anchor`
        wrote): record n - 1 must have hash h; `hypotheses` ({id: content_hash}, as printed when
        they were registered): each registration must hold that content, recomputed from its fields."""
        head = _anchor_of(anchor) if anchor is not None else None
        expected = _content_anchors(hypotheses) if hypotheses is not None else {}
        with self._shared() as records:
            if head is not None:
                n, h = head
                if len(records) < n:
                    raise LedgerError(f"ledger {self.path} has {len(records)} records but the anchor holds {n}: "
                                      f"records were removed")
                if records[n - 1]["hash"] != h:
                    raise LedgerError(f"ledger {self.path} line {n}: hash {records[n - 1]['hash'][:16]} is not the "
                                      f"anchor's {h[:16]}: a record up to line {n} was rewritten (hashes recomputed)")
            for hid, content in expected.items():
                reg = self._registration(records, hid)
                got = Hypothesis.from_dict(reg).content_hash
                if got != content or reg.get("content_hash") != content:
                    raise LedgerError(f"ledger {self.path} line {reg['seq'] + 1}: hypothesis {hid} has content hash "
                                      f"{got}, not the anchored {content}: it was edited after registration")
            return len(records)

    def anchor(self) -> dict[str, Any]:
        """Return the head of the verified chain, {"records": n, "hash": last hash}, to keep where the
        ledger's editor cannot rewrite it quietly (a committed file, a notebook output, a message)."""
        with self._shared() as records:
            return {"records": len(records), "hash": records[-1]["hash"] if records else ""}

    def save_anchor(self, path: str | os.PathLike) -> dict[str, Any]:
        """Write `anchor()` as JSON to `path` (for example a file tracked by git) and return it."""
        if not isinstance(path, (str, os.PathLike)) or Path(path) == self.path:
            raise _bad("save_anchor", "path", path, "must be a file path other than the ledger's")
        head = self.anchor()
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(head) + "\n")
        os.replace(tmp, target)
        return head

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Return the verified records, optionally only those of `kind`."""
        with self._shared() as records:
            return [r for r in records if kind is None or r.get("kind") == kind]

    # ---- hypotheses

    def _registration(self, records: list[dict[str, Any]], hid: str) -> dict[str, Any]:
        for r in records:
            if r.get("kind") == "hypothesis" and r["id"] == hid:
                return r
        raise LedgerError(f"hypothesis id={hid!r} is not registered in {self.path}: register it first")

    def hypothesis(self, hid: str) -> Hypothesis:
        """Return the registered hypothesis `hid`."""
        return Hypothesis.from_dict(self._registration(self.records("hypothesis"), hid))

    def register(self, h: Hypothesis, exploratory_runs: Any = ()) -> dict[str, Any]:
        """Record `h` with a timestamp and the runs that inspired it (never usable as evidence);
        return its registration record. Registering identical content again is a no-op; any change
        is refused (register a new id with refines=...)."""
        if not isinstance(h, Hypothesis):
            raise _bad("register", "h", h, "must be a Hypothesis")
        exploratory = _run_hashes(exploratory_runs)
        with self._exclusive() as snap:
            known = {r["id"]: r for r in snap.records if r.get("kind") == "hypothesis"}
            if h.id in known:
                return _unchanged(h, known[h.id])
            if h.refines is not None and h.refines not in known:
                raise _bad("Hypothesis", "refines", h.refines, f"no such hypothesis in {self.path}")
            return self._append(snap, {"kind": "hypothesis", **h.to_dict(), "content_hash": h.content_hash,
                                       "registered_at": _now(), "exploratory_runs": exploratory})

    def lineage(self, hid: str) -> list[str]:
        """Return the chain of ids from the original hypothesis to `hid`."""
        chain = [hid]
        while (parent := self.hypothesis(chain[-1]).refines) is not None:
            chain.append(parent)
        return chain[::-1]

    # ---- evidence

    def add_evidence(self, hid: str, run: Any, value: Any, condition: str = MAIN) -> dict[str, Any]:
        """Record `value` measured on one `run` (with .hash, .config.flat(), .summary) for `hid`
        under `condition` ('main' or a control name); return the evidence record. The same run
        and value again is a no-op; the same run with another value is refused."""
        value = _finite("add_evidence", "value", value)
        run_hash = _text("add_evidence", "run.hash", getattr(run, "hash", None))
        if not hasattr(getattr(run, "config", None), "flat") or not isinstance(getattr(run, "summary", None), dict):
            raise _bad("add_evidence", "run", run, "must be a finished Run (with .config and a .summary dict)")
        with self._exclusive() as snap:
            reg = self._registration(snap.records, hid)
            _check_evidence(Hypothesis.from_dict(reg), reg, run, value, condition)
            old = _find_evidence(snap.records, hid, condition, run_hash)
            if old is not None:
                return _same_value(old, value)
            return self._append(snap, _evidence_record(hid, run, value, condition))

    def evidence(self, hid: str, condition: str = MAIN) -> list[dict[str, Any]]:
        """Return the evidence records of `hid` under `condition`, in ledger order."""
        records = self.records()
        self._registration(records, hid)
        return _rows(records, hid, condition)

    def values(self, hid: str, condition: str = MAIN) -> list[float]:
        """Return the recorded values of `hid` under `condition`, in ledger order."""
        return [r["value"] for r in self.evidence(hid, condition)]

    # ---- verdicts

    def _verdict(self, records: list[dict[str, Any]], hid: str) -> dict[str, Any]:
        """Return the verdict of `hid` computed from `records` (see verdict)."""
        reg = self._registration(records, hid)
        h, main = Hypothesis.from_dict(reg), _rows(records, hid, MAIN)
        row = {"hypothesis": hid, "statistic": h.statistic,
               **_summary([r["value"] for r in main], h.statistic, h.comparison, h.threshold)}
        controls = {c.name: _summary([r["value"] for r in _rows(records, hid, c.name)], "mean",
                                     c.comparison, c.threshold) for c in h.controls}
        overall = row["verdict"]
        if overall == "supported" and any(c["verdict"] != "supported" for c in controls.values()):
            overall = "inconclusive"  # a control that fails: the evidence does not discriminate
        return {**row, "main": row["verdict"], "controls": controls, "verdict": overall,
                "evidence_delay_s": _delay(reg["registered_at"], main)}

    def verdict(self, hid: str) -> dict[str, Any]:
        """Return (never record) the verdict of `hid` from its evidence now: n, mean (the proportion
        for statistic='proportion'), ci_low, ci_high, main (its verdict), controls ({name: the same
        numbers and verdict}), verdict ('untested' without main evidence; 'supported' only when
        every control is supported too) and evidence_delay_s (registration to the earliest start
        of a main evidence run)."""
        return self._verdict(self.records(), hid)

    def record_verdict(self, hid: str) -> dict[str, Any]:
        """Append the current verdict of `hid` (kind 'verdict', with decided_at) unless the latest
        recorded one is identical; return the record. Non-finite numbers are stored as null."""
        with self._exclusive() as snap:
            row = _strict(self._verdict(snap.records, hid))
            last = [r for r in snap.records if r.get("kind") == "verdict" and r.get("hypothesis") == hid]
            if last and {k: v for k, v in last[-1].items() if k in row} == row:
                return last[-1]  # the same decision from the same evidence: recorded once
            return self._append(snap, {"kind": "verdict", **row, "decided_at": _now()})

    def family_verdicts(self, ids: Any, alpha: float = 0.025) -> pd.DataFrame:
        """Return the verdicts of one family of claims (a notebook's) corrected for multiplicity by
        Holm's procedure: each main claim's one-sided p against its threshold (`p_value`); a claim
        stays 'supported' only if Holm rejects its null at family-wise `alpha` (one-sided 0.025, the
        side of a two-sided 95 % interval, so a family of one is judged as before) and it was
        supported (controls included); 'refuted', 'inconclusive' and 'untested' are kept. Columns
        id, p_value, unadjusted, verdict."""
        return self._family(self.records(), ids, alpha)

    def _family(self, records: list[dict[str, Any]], ids: Any, alpha: float) -> pd.DataFrame:
        ids = [_text("family_verdicts", "ids[]", i) for i in ids] if hasattr(ids, "__iter__") \
            and not isinstance(ids, (str, bytes)) else ids
        if not isinstance(ids, list) or not ids or len(set(ids)) != len(ids):
            raise _bad("family_verdicts", "ids", ids, "must be a non-empty list of distinct hypothesis ids")
        rows = []
        for hid in ids:
            h, v = Hypothesis.from_dict(self._registration(records, hid)), self._verdict(records, hid)
            values = [r["value"] for r in _rows(records, hid, MAIN)]
            rows.append({"id": hid, "p_value": p_value(values, h.statistic, h.comparison, h.threshold),
                         "unadjusted": v["verdict"]})
        rejected = holm({r["id"]: r["p_value"] for r in rows}, alpha)
        for r in rows:
            r["verdict"] = ("supported" if rejected[r["id"]] else "inconclusive (Holm)") \
                if r["unadjusted"] == "supported" else r["unadjusted"]
        return pd.DataFrame(rows, columns=["id", "p_value", "unadjusted", "verdict"])

    def record_family_verdicts(self, ids: Any, alpha: float = 0.025) -> pd.DataFrame:
        """Record `family_verdicts(ids, alpha)`: one verdict record per claim (kind 'verdict') with the
        Holm-corrected verdict, the unadjusted one, its p-value and the family; return the frame."""
        with self._exclusive() as snap:
            family = self._family(snap.records, ids, alpha)  # read under the same lock it is recorded under
            for r in family.itertuples():
                row = _strict({**self._verdict(snap.records, r.id), "verdict": r.verdict, "unadjusted": r.unadjusted,
                               "p_value": r.p_value, "correction": "holm", "alpha": alpha, "family": list(family.id)})
                last = [x for x in snap.records if x.get("kind") == "verdict" and x.get("hypothesis") == r.id]
                if last and {k: v for k, v in last[-1].items() if k in row} == row:
                    continue
                rec = self._append(snap, {"kind": "verdict", **row, "decided_at": _now()})
                snap = _Snapshot([*snap.records, rec], self.path.stat().st_size)  # the next record chains after it
        return family

    def table(self) -> pd.DataFrame:
        """Return one row per hypothesis (refuted and inconclusive ones included) with its verdict
        computed from the evidence now: id, claim, prediction, refines, statistic, n, mean, ci_low,
        ci_high, controls, verdict, evidence_delay_s."""
        records = self.records()
        rows = [_table_row(Hypothesis.from_dict(r), self._verdict(records, r["id"]))
                for r in records if r.get("kind") == "hypothesis"]
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)


TABLE_COLUMNS = ["id", "claim", "prediction", "refines", "statistic", "n", "mean", "ci_low", "ci_high",
                 "controls", "verdict", "evidence_delay_s"]


# ---------------------------------------------------------------- record helpers


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """Return the JSON object on a line, or None if it is not one."""
    try:
        obj = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _anchor_of(anchor: Any) -> tuple[int, str]:
    """Return (records, hash) of an anchor given as a mapping or the path of a saved anchor file."""
    if isinstance(anchor, (str, os.PathLike)):
        try:
            anchor = json.loads(Path(anchor).read_text())
        except (OSError, ValueError) as e:
            raise _bad("verify", "anchor", str(anchor), f"must be a readable anchor file ({e})") from None
    if not isinstance(anchor, Mapping) or set(anchor) != {"records", "hash"}:
        raise _bad("verify", "anchor", anchor, 'must be {"records": n, "hash": h} from Ledger.anchor() or its file')
    n, h = anchor["records"], anchor["hash"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(h, str) or len(h) != 64:
        raise _bad("verify", "anchor", anchor, "must hold records >= 1 and a 64-hex-digit hash")
    return n, h


def _content_anchors(hypotheses: Any) -> dict[str, str]:
    """Return {id: content_hash} after checking it is a mapping of ids to 16-hex-digit hashes."""
    if not isinstance(hypotheses, Mapping) or not hypotheses:
        raise _bad("verify", "hypotheses", hypotheses, "must be a non-empty {id: content_hash} mapping")
    for hid, h in hypotheses.items():
        if not isinstance(hid, str) or not isinstance(h, str) or len(h) != 16 \
                or any(c not in "0123456789abcdef" for c in h):
            raise _bad("verify", f"hypotheses[{hid!r}]", h, "must be a 16-hex-digit content hash")
    return dict(hypotheses)


def _run_hashes(runs: Any) -> list[str]:
    """Return the hashes of `runs` (run objects or hash strings)."""
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise _bad("register", "exploratory_runs", runs, "must be a list of runs or run hashes")
    return [_text("register", "exploratory_runs[]", getattr(r, "hash", r)) for r in runs]


def _unchanged(h: Hypothesis, stored: dict[str, Any]) -> dict[str, Any]:
    """Return the stored registration if `h` has its content, else raise LedgerError."""
    if stored["content_hash"] == h.content_hash:
        return stored
    changed = [k for k, v in h.to_dict().items() if stored.get(k) != v]
    raise LedgerError(f"hypothesis {h.id} was recorded at {stored['registered_at']} and cannot be "
                      f"edited (changed: {changed}); register a new id with refines={h.id!r}")


def _check_evidence(h: Hypothesis, reg: dict[str, Any], run: Any, value: float, condition: str) -> None:
    """Raise LedgerError unless `run` and `value` may be evidence for `h` under `condition`."""
    allowed = [MAIN, *(c.name for c in h.controls)]
    if condition not in allowed:
        raise _bad("add_evidence", "condition", condition, f"{h.id} has conditions {allowed}")
    if condition == MAIN and h.statistic == "proportion" and value not in (0.0, 1.0):
        raise _bad("add_evidence", "value", value, f"{h.id} is a proportion: each value is 0 or 1")
    if condition == MAIN:
        _check_scope(h, run)
    if run.hash in reg["exploratory_runs"]:
        raise LedgerError(f"run {run.hash} is exploratory for {h.id} (it inspired the hypothesis): "
                          f"it can never be evidence; use runs started after registration")
    _check_started(h.id, reg["registered_at"], run)


def _check_scope(h: Hypothesis, run: Any) -> None:
    """Raise LedgerError unless the run's flat config matches every field of `h.scope`."""
    flat = run.config.flat()
    for key, want in h.scope:
        got = flat.get(key, "<missing>")
        if got != want:
            raise LedgerError(f"run {run.hash} is out of scope for {h.id}: its {key}={got!r} but the "
                              f"scope requires {key}={want!r}")


def _check_started(hid: str, registered_at: str, run: Any) -> None:
    """Raise LedgerError unless the run started strictly after `hid` was registered."""
    started = run.summary.get("started_at")
    if started is None:
        raise LedgerError(f"run {run.hash} has no summary['started_at']: evidence must come from runs "
                          f"started after {hid} was registered at {registered_at}")
    if _time(started, f"run {run.hash} started_at") <= _time(registered_at, "registered_at"):
        raise LedgerError(f"run {run.hash} started at {started} before {hid} was registered at "
                          f"{registered_at}: evidence must come from runs started after registration")


def _rows(records: list[dict[str, Any]], hid: str, condition: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "evidence" and r["hypothesis"] == hid
            and r["condition"] == condition]


def _find_evidence(records: list[dict[str, Any]], hid: str, condition: str, run: str) -> dict | None:
    """Return the evidence record of (hid, condition, run), or None."""
    return next((r for r in _rows(records, hid, condition) if r["run"] == run), None)


def _same_value(old: dict[str, Any], value: float) -> dict[str, Any]:
    """Return `old` if it recorded `value`, else raise LedgerError (one run, one result)."""
    if old["value"] == value:
        return old
    raise LedgerError(f"run {old['run']} already has value={old['value']!r} for {old['hypothesis']} "
                      f"({old['condition']}), recorded at {old['recorded_at']}; value={value!r} is not "
                      f"allowed: one run, one result")


def _evidence_record(hid: str, run: Any, value: float, condition: str) -> dict[str, Any]:
    return {"kind": "evidence", "hypothesis": hid, "condition": condition, "run": run.hash,
            "value": value, "seed": run.config.flat().get("train.seed"),
            "started_at": run.summary["started_at"], "code_version": run.summary.get("code_version"),
            "recorded_at": _now()}


def _delay(registered_at: str, rows: list[dict[str, Any]]) -> float:
    """Return seconds from registration to the earliest start of the runs in `rows` (nan if none)."""
    if not rows:
        return math.nan
    first = min(_time(r["started_at"], "started_at") for r in rows)
    return (first - _time(registered_at, "registered_at")).total_seconds()


def _table_row(h: Hypothesis, v: dict[str, Any]) -> dict[str, Any]:
    controls = "; ".join(f"{name}: {c['verdict']}" for name, c in v["controls"].items())
    return {"id": h.id, "claim": h.claim, "prediction": f"{h.measurement} {h.prediction}",
            "refines": h.refines or "", "statistic": h.statistic, "n": v["n"], "mean": v["mean"],
            "ci_low": v["ci_low"], "ci_high": v["ci_high"], "controls": controls,
            "verdict": v["verdict"], "evidence_delay_s": v["evidence_delay_s"]}
