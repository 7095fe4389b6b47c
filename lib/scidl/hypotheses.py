"""Preregistered hypotheses and their ledger.

A Hypothesis is registered (claim, measurement, prediction with threshold, falsifier, controls,
config hash, timestamp) *before* any evidence; after that it is immutable: a changed claim is a new
hypothesis that `refines` the old one. Evidence is one value per seed; the verdict compares a 95 %
confidence interval of the mean with the threshold. Everything is appended to a JSON-lines ledger.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

COMPARISONS = {">": lambda x, t: x > t, "<": lambda x, t: x < t}
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


class LedgerError(ValueError):
    """A ledger rule was broken (editing a recorded prediction, evidence before registration, ...)."""


@dataclass(frozen=True)
class Hypothesis:
    """A precise, testable claim: `measurement` per seed, predicted `comparison` `threshold`."""

    id: str
    claim: str
    measurement: str  # what is measured, per seed, in words precise enough to re-implement
    comparison: str  # ">" or "<": the predicted side of the threshold
    threshold: float
    falsifier: str  # the result that refutes the claim
    controls: tuple[str, ...] = ()
    refines: str | None = None  # id of the hypothesis this one refines
    config_hash: str = ""  # the experiment's base config

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise LedgerError(f"Hypothesis.comparison={self.comparison!r} is not allowed: use '>' or '<'")
        if not isinstance(self.threshold, (int, float)) or math.isnan(self.threshold):
            raise LedgerError(f"Hypothesis.threshold={self.threshold!r} is not allowed: must be a number")
        object.__setattr__(self, "controls", tuple(self.controls))

    @property
    def prediction(self) -> str:
        return f"{self.comparison} {self.threshold:g}"


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Return mean and a two-sided 95 % t-interval (low, high) of `values`."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, -math.inf, math.inf
    half = T_95.get(n - 1, 1.96) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def judge(h: Hypothesis, low: float, high: float) -> str:
    """Return 'supported' if the whole interval lies on the predicted side, 'refuted' if it lies
    wholly on the other side, else 'inconclusive'."""
    predicted = COMPARISONS[h.comparison]
    if predicted(low, h.threshold) and predicted(high, h.threshold):
        return "supported"
    if not predicted(low, h.threshold) and not predicted(high, h.threshold) and \
            (low != h.threshold and high != h.threshold):
        return "refuted"
    return "inconclusive"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def default_ledger_path() -> Path:
    """Return $SCIDL_LEDGER, else data/ledger.jsonl in the checkout."""
    if os.environ.get("SCIDL_LEDGER"):
        return Path(os.environ["SCIDL_LEDGER"])
    from scidl.store import default_root

    return default_root().parent / "ledger.jsonl"


@dataclass
class Ledger:
    """An append-only JSON-lines ledger of hypotheses, evidence and verdicts."""

    path: Path = field(default_factory=default_ledger_path)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def _append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # one line per write: a crash loses at most that line
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def hypothesis(self, hid: str) -> Hypothesis:
        for r in self.records("hypothesis"):
            if r["id"] == hid:
                fields = {k: r[k] for k in Hypothesis.__dataclass_fields__}
                return Hypothesis(**fields)
        raise LedgerError(f"hypothesis id={hid!r} is not registered in {self.path}: register it "
                          f"first (notebook 04 registers H1-H3)")

    def register(self, h: Hypothesis) -> Hypothesis:
        """Record `h` with a timestamp; re-registering the identical hypothesis is a no-op, any
        change to a recorded one is refused (register a new id with refines=...)."""
        existing = {r["id"]: r for r in self.records("hypothesis")}
        if h.id in existing:
            old = self.hypothesis(h.id)
            if old != h:
                changed = [k for k in asdict(h) if asdict(h)[k] != asdict(old)[k]]
                raise LedgerError(
                    f"hypothesis {h.id} was recorded at {existing[h.id]['registered_at']} and cannot be "
                    f"edited (changed: {changed}); register a new id with refines={h.id!r}")
            return old
        if h.refines is not None and h.refines not in existing:
            raise LedgerError(f"Hypothesis.refines={h.refines!r} is not allowed: no such hypothesis")
        self._append({"kind": "hypothesis", **asdict(h), "registered_at": _now()})
        return h

    def add_evidence(self, hid: str, values: dict[Any, float], condition: str = "main",
                     run_hashes: dict[Any, str] | None = None) -> None:
        """Record one measured value per seed for hypothesis `hid` under `condition` (main/control)."""
        self.hypothesis(hid)  # must be registered first
        seen = {(r["hypothesis"], r["condition"], str(r["seed"])) for r in self.records("evidence")}
        for seed, value in values.items():
            if (hid, condition, str(seed)) in seen:
                continue  # a rerun measures the same thing again: keep the first record
            self._append({"kind": "evidence", "hypothesis": hid, "condition": condition, "seed": seed,
                          "value": float(value), "run": (run_hashes or {}).get(seed, ""),
                          "recorded_at": _now()})

    def evidence(self, hid: str, condition: str = "main") -> list[float]:
        return [r["value"] for r in self.records("evidence")
                if r["hypothesis"] == hid and r["condition"] == condition]

    def verdict(self, hid: str) -> dict[str, Any]:
        """Return (and record, once per evidence set) the verdict of `hid` from its main evidence;
        'untested' (not recorded) when there is no evidence."""
        h, values = self.hypothesis(hid), self.evidence(hid)
        if not values:  # nothing measured (e.g. no run in the hypothesis' scope): nothing to record
            return {"hypothesis": hid, "n": 0, "mean": math.nan, "ci_low": math.nan,
                    "ci_high": math.nan, "verdict": "untested"}
        mean, low, high = mean_ci(values)
        row = {"hypothesis": hid, "n": len(values), "mean": mean, "ci_low": low, "ci_high": high,
               "verdict": judge(h, low, high)}
        previous = [r for r in self.records("verdict") if r["hypothesis"] == hid and r["n"] == len(values)
                    and r["mean"] == mean]
        if not previous:
            self._append({"kind": "verdict", **row, "decided_at": _now()})
        return row

    def table(self) -> pd.DataFrame:
        """Return one row per hypothesis: claim, prediction, lineage, latest verdict and interval."""
        verdicts = {r["hypothesis"]: r for r in self.records("verdict")}
        rows = []
        for r in self.records("hypothesis"):
            h, v = self.hypothesis(r["id"]), verdicts.get(r["id"], {})
            rows.append({"id": h.id, "claim": h.claim, "prediction": f"{h.measurement} {h.prediction}",
                         "refines": h.refines or "", "n_seeds": v.get("n", 0),
                         "mean": v.get("mean", math.nan), "ci_low": v.get("ci_low", math.nan),
                         "ci_high": v.get("ci_high", math.nan), "verdict": v.get("verdict", "untested")})
        return pd.DataFrame(rows)

    def lineage(self, hid: str) -> list[str]:
        """Return the chain of ids from the original hypothesis to `hid`."""
        chain = [hid]
        while (parent := self.hypothesis(chain[-1]).refines) is not None:
            chain.append(parent)
        return chain[::-1]
