import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np
import pytest

from scidl.hypotheses import (Control, Hypothesis, Ledger, LedgerError, LedgerWarning, judge, mean_ci,
                              proportion_ci)


@dataclass(frozen=True)
class FakeConfig:
    fields: dict

    def flat(self):
        return dict(self.fields)


@dataclass(frozen=True)
class FakeRun:
    hash: str
    config: FakeConfig
    summary: dict = field(default_factory=dict)


def _run(i, started, p=59, steps=3000, code="v1"):
    config = FakeConfig({"task.op": "add", "task.p": p, "train.seed": i, "train.steps": steps})
    return FakeRun(f"{i:012x}", config, {"started_at": started, "finished_at": started,
                                         "code_version": code})


def _h(**kw):
    base = dict(id="H1", claim="keeping key frequencies keeps the loss low",
                measurement="test loss gap", comparison=">", threshold=1.0, falsifier="gap <= 1",
                controls=(Control("random freqs", "random frequencies do not matter", "<", 0.5),),
                scope={"task.p": 59, "train.steps": 3000})
    return Hypothesis(**{**base, **kw})


def _after(ledger, hid="H1", seconds=1.0):
    """Return an ISO time `seconds` after `hid` was registered."""
    reg = next(r for r in ledger.records("hypothesis") if r["id"] == hid)
    return (datetime.fromisoformat(reg["registered_at"]) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h())
    return ledger


def _add(ledger, values, start=0, condition="main", hid="H1"):
    for i, v in enumerate(values, start):
        ledger.add_evidence(hid, _run(i, _after(ledger, hid)), v, condition=condition)


# ---------------------------------------------------------------- statistics


def test_mean_ci_uses_exact_t_quantiles():
    values = [float(v) for v in range(11)]  # n=11: df=10, t(0.975, 10) = 2.228
    mean, low, high = mean_ci(values)
    sd = np.std(values, ddof=1)
    assert mean == 5.0 and high - mean == pytest.approx(2.2281 * sd / math.sqrt(11), rel=1e-4)
    values12 = values + [11.0]  # n=12: df=11, t = 2.201
    mean, low, high = mean_ci(values12)
    assert high - mean == pytest.approx(2.2010 * np.std(values12, ddof=1) / math.sqrt(12), rel=1e-4)
    mean, low, high = mean_ci([float(v) for v in range(40)])  # df=39: 2.0227, not the normal 1.96
    assert high - mean == pytest.approx(2.0227 * np.std(range(40), ddof=1) / math.sqrt(40), rel=1e-4)
    mean, low, high = mean_ci([1.0, 2.0, 3.0], level=0.99)  # t(0.995, 2) = 9.925
    assert high - mean == pytest.approx(9.9248 / math.sqrt(3), rel=1e-4)
    assert mean_ci([5.0]) == (5.0, -math.inf, math.inf)


def test_clopper_pearson_matches_known_values():
    p, low, high = proportion_ci(0, 10)
    assert (p, low) == (0.0, 0.0) and high == pytest.approx(0.3085, abs=1e-4)
    p, low, high = proportion_ci(5, 10)
    assert p == 0.5 and (low, high) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    p, low, high = proportion_ci(10, 10)
    assert low == pytest.approx(0.6915, abs=1e-4) and high == 1.0
    with pytest.raises(LedgerError, match="successes=11"):
        proportion_ci(11, 10)


def test_judge_needs_the_whole_interval_strictly_on_one_side():
    assert judge(">", 1.0, 1.5, 3.0) == "supported"
    assert judge(">", 1.0, 0.1, 0.9) == "refuted"
    assert judge(">", 1.0, 0.5, 1.5) == "inconclusive"
    assert judge(">", 1.0, 1.0, 2.0) == "inconclusive"  # touching the threshold is not strictly above
    assert judge(">", 1.0, 0.0, 1.0) == "inconclusive"
    assert judge("<", 1.0, 0.1, 0.9) == "supported"
    assert judge("<", 1.0, 1.5, 3.0) == "refuted"
    assert judge(">", 1.0, -math.inf, math.inf) == "inconclusive"


# ---------------------------------------------------------------- hypotheses


@pytest.mark.parametrize("kw, match", [
    (dict(id=""), r"Hypothesis.id='' is not allowed: must be a non-empty string"),
    (dict(claim=3), r"Hypothesis.claim=3 is not allowed"),
    (dict(falsifier=" "), r"Hypothesis.falsifier=' '"),
    (dict(comparison=">="), r"Hypothesis.comparison='>=' is not allowed: use '>' or '<'"),
    (dict(threshold=math.nan), r"Hypothesis.threshold=nan is not allowed: must be a finite"),
    (dict(threshold=math.inf), r"Hypothesis.threshold=inf"),
    (dict(threshold="1"), r"Hypothesis.threshold='1'"),
    (dict(threshold=True), r"Hypothesis.threshold=True"),
    (dict(controls="abc"), r"Hypothesis.controls='abc' is not allowed: must be a tuple or list of Control"),
    (dict(controls=("random freqs",)), r"Hypothesis.controls="),
    (dict(scope={"task.p": [59]}), r"scope\['task.p'\]=\[59\] is not allowed: must be a JSON scalar"),
    (dict(statistic="median"), r"Hypothesis.statistic='median' is not allowed"),
    (dict(refines=""), r"Hypothesis.refines=''"),
])
def test_hypothesis_fields_are_validated(kw, match):
    with pytest.raises(LedgerError, match=match):
        _h(**kw)


def test_control_fields_are_validated():
    with pytest.raises(LedgerError, match=r"Control.name=''"):
        Control("", "c", "<", 1.0)
    with pytest.raises(LedgerError, match=r"Control.threshold=nan"):
        Control("x", "c", "<", math.nan)
    with pytest.raises(LedgerError, match=r"Control.comparison='='"):
        Control("x", "c", "=", 1.0)


def test_hypothesis_is_frozen_hashable_and_content_hashed():
    h = _h(threshold=np.float32(1.5), scope={"train.steps": np.int64(3000), "task.p": 59})
    assert type(h.threshold) is float and h.threshold == 1.5
    assert h.scope == (("task.p", 59), ("train.steps", 3000))  # sorted items
    assert hash(h) == hash(_h(threshold=1.5)) and h == _h(threshold=1.5)
    assert len(h.content_hash) == 16 and h.content_hash == _h(threshold=1.5).content_hash
    assert h.content_hash != _h(threshold=1.6).content_hash
    assert replace(h, threshold=2.0).scope == h.scope  # round-trips through its own fields
    with pytest.raises(AttributeError):
        h.threshold = 2.0


def test_prediction_cannot_be_edited_after_recording(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    first = ledger.register(_h())
    assert ledger.register(_h()) == first  # identical: a notebook rerun is a no-op
    with pytest.raises(LedgerError, match=r"H1 was recorded at .*\d{6}\+00:00 and cannot be edited "
                                          r"\(changed: \['threshold'\]\).*refines='H1'"):
        ledger.register(_h(threshold=0.5))
    assert len(ledger.records("hypothesis")) == 1 and ledger.hypothesis("H1") == _h()
    assert first["content_hash"] == _h().content_hash


def test_refinement_is_linked_and_must_name_a_known_hypothesis(ledger):
    ledger.register(_h(id="H1b", threshold=0.5, refines="H1"))
    assert ledger.lineage("H1b") == ["H1", "H1b"]
    with pytest.raises(LedgerError, match="refines='H9'"):
        ledger.register(_h(id="H2", refines="H9"))


# ---------------------------------------------------------------- evidence


def test_evidence_needs_registration(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(LedgerError, match="id='H1' is not registered"):
        ledger.add_evidence("H1", _run(0, "2030-01-01T00:00:00+00:00"), 2.0)


def test_contradicting_evidence_changes_the_verdict(ledger):
    _add(ledger, [2.0, 2.5, 3.0], condition="random freqs")
    assert ledger.verdict("H1")["verdict"] == "untested"
    _add(ledger, [2.0, 2.5, 3.0])
    v = ledger.verdict("H1")
    assert (v["main"], v["verdict"], v["n"]) == ("supported", "inconclusive", 3)  # control (< 0.5) failed
    ledger2 = Ledger(ledger.path.with_name("l2.jsonl"))
    ledger2.register(_h())
    _add(ledger2, [0.1, 0.2, 0.3], condition="random freqs")
    _add(ledger2, [2.0, 2.5, 3.0])
    v = ledger2.verdict("H1")
    assert (v["verdict"], v["n"], v["mean"]) == ("supported", 3, 2.5) and v["ci_low"] > 1.0
    _add(ledger2, [0.0, -1.0, 0.5, 0.2], start=3)  # later runs contradict the claim
    v = ledger2.verdict("H1")
    assert v["n"] == 7 and v["verdict"] in {"inconclusive", "refuted"} and v["ci_low"] < 1.0
    _add(ledger2, [-2.0] * 10, start=7)
    assert ledger2.verdict("H1")["verdict"] == "refuted"
    assert ledger2.verify() == 1 + 3 + 3 + 4 + 10


def test_a_rerun_duplicates_nothing_and_one_run_has_one_result(ledger):
    run = _run(0, _after(ledger))
    first = ledger.add_evidence("H1", run, 2.0)
    assert ledger.add_evidence("H1", run, np.float64(2.0)) == first
    with pytest.raises(LedgerError, match=r"run 000000000000 already has value=2.0 .*value=3.0 .*one run, "
                                          r"one result"):
        ledger.add_evidence("H1", run, 3.0)
    ledger.add_evidence("H1", run, 0.1, condition="random freqs")  # another condition is another key
    assert ledger.values("H1") == [2.0] and ledger.values("H1", "random freqs") == [0.1]
    assert len(ledger.records("evidence")) == 2


def test_evidence_record_keeps_run_provenance(ledger):
    started = _after(ledger)
    ledger.add_evidence("H1", _run(7, started, code="abc123"), np.float32(2.5))
    (row,) = ledger.evidence("H1")
    assert (row["run"], row["seed"], row["value"], row["started_at"], row["code_version"]) == \
        ("000000000007", 7, 2.5, started, "abc123")
    assert row["condition"] == "main" and datetime.fromisoformat(row["recorded_at"]).tzinfo is not None


def test_exploratory_runs_are_never_evidence(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h(), exploratory_runs=[_run(0, "x"), "00000000000a"])
    for i in (0, 10):
        with pytest.raises(LedgerError, match=f"run {i:012x} is exploratory for H1"):
            ledger.add_evidence("H1", _run(i, _after(ledger)), 2.0)
    with pytest.raises(LedgerError, match="exploratory_runs='abc'"):
        ledger.register(_h(id="H2"), exploratory_runs="abc")
    assert ledger.records("evidence") == []


def test_runs_started_before_registration_are_refused(ledger):
    for seconds in (-1.0, 0.0):
        with pytest.raises(LedgerError, match=r"run 000000000000 started at .* before H1 was registered at "
                                              r".*evidence must come from runs started after registration"):
            ledger.add_evidence("H1", _run(0, _after(ledger, seconds=seconds)), 2.0)
    no_start = FakeRun("0000000000ff", _run(0, "").config, {"code_version": "v1"})
    with pytest.raises(LedgerError, match=r"run 0000000000ff has no summary\['started_at'\]"):
        ledger.add_evidence("H1", no_start, 2.0)
    assert ledger.records("evidence") == []


def test_out_of_scope_runs_are_refused_on_main_only(ledger):
    with pytest.raises(LedgerError, match=r"out of scope for H1: its task.p=97 but the scope requires "
                                          r"task.p=59"):
        ledger.add_evidence("H1", _run(0, _after(ledger), p=97), 2.0)
    with pytest.raises(LedgerError, match=r"train.steps=100 .* train.steps=3000"):
        ledger.add_evidence("H1", _run(0, _after(ledger), steps=100), 2.0)
    ledger.add_evidence("H1", _run(0, _after(ledger), p=97), 0.1, condition="random freqs")
    assert ledger.values("H1") == [] and ledger.values("H1", "random freqs") == [0.1]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "abc", True, None, np.float64("nan")])
def test_non_finite_or_non_numeric_values_are_refused(ledger, value):
    with pytest.raises(LedgerError, match=r"value=.* is not allowed: must be a finite real number"):
        ledger.add_evidence("H1", _run(0, _after(ledger)), value)
    assert ledger.records("evidence") == []


def test_unknown_conditions_are_refused(ledger):
    with pytest.raises(LedgerError, match=r"condition='random' .*\['main', 'random freqs'\]"):
        ledger.add_evidence("H1", _run(0, _after(ledger)), 0.1, condition="random")


def test_proportions_take_0_or_1_and_use_clopper_pearson(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h(id="P1", comparison=">", threshold=0.5, statistic="proportion", controls=()))
    with pytest.raises(LedgerError, match=r"value=0.5 is not allowed: P1 is a proportion"):
        ledger.add_evidence("P1", _run(0, _after(ledger, "P1")), 0.5)
    _add(ledger, [1] * 10, hid="P1")
    v = ledger.verdict("P1")  # a t-interval of ten 1s would be [1, 1]
    assert (v["n"], v["mean"], v["ci_high"], v["verdict"]) == (10, 1.0, 1.0, "supported")
    assert v["ci_low"] == pytest.approx(0.6915, abs=1e-4)


# ---------------------------------------------------------------- verdicts


def test_controls_must_be_supported_for_an_overall_support(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    controls = (Control("random freqs", "no effect", "<", 0.5),
                Control("random labels", "no effect", "<", 0.5))
    ledger.register(_h(controls=controls))
    _add(ledger, [2.0, 2.5, 3.0])
    v = ledger.verdict("H1")
    assert (v["main"], v["verdict"]) == ("supported", "inconclusive")  # controls untested
    assert v["controls"]["random labels"]["verdict"] == "untested"
    _add(ledger, [0.1, 0.2, 0.15], start=10, condition="random freqs")
    _add(ledger, [0.9, 1.0, 1.1], start=10, condition="random labels")  # this control fails
    v = ledger.verdict("H1")
    assert v["controls"]["random freqs"]["verdict"] == "supported"
    assert v["controls"]["random labels"]["verdict"] == "refuted" and v["verdict"] == "inconclusive"
    assert ledger.table().loc[0, "controls"] == "random freqs: supported; random labels: refuted"


def test_verdict_is_pure_and_record_verdict_appends_one_record(ledger):
    _add(ledger, [0.1, 0.2, 0.15], condition="random freqs")
    _add(ledger, [2.0, 2.5, 3.0])
    before = ledger.path.read_bytes()
    v = ledger.verdict("H1")
    ledger.verdict("H1")
    ledger.table()
    assert ledger.path.read_bytes() == before and v["verdict"] == "supported"
    assert v["evidence_delay_s"] == pytest.approx(1.0)
    rec = ledger.record_verdict("H1")
    assert len(ledger.records()) == len(before.splitlines()) + 1
    (stored,) = ledger.records("verdict")
    assert stored == rec and stored["verdict"] == "supported" and stored["n"] == 3 and "decided_at" in stored
    assert stored["controls"]["random freqs"]["verdict"] == "supported"
    assert ledger.record_verdict("H1") == rec and len(ledger.records("verdict")) == 1  # a rerun: once
    _add(ledger, [2.2], start=3)
    assert ledger.record_verdict("H1")["n"] == 4 and len(ledger.records("verdict")) == 2


def test_untested_verdict_is_recorded_with_strict_json(ledger):
    assert ledger.verdict("H1")["verdict"] == "untested" and math.isnan(ledger.verdict("H1")["mean"])
    rec = ledger.record_verdict("H1")
    assert rec["mean"] is None and rec["verdict"] == "untested"
    assert "NaN" not in ledger.path.read_text() and ledger.verify() == 2


def test_table_shows_every_hypothesis_from_the_evidence_now(ledger):
    ledger.register(_h(id="H1b", refines="H1", threshold=5.0, controls=()))
    _add(ledger, [0.1, 0.2, 0.15], condition="random freqs")
    _add(ledger, [2.0, 2.5, 3.0])
    _add(ledger, [2.0, 2.5, 3.0], hid="H1b")
    ledger.record_verdict("H1")
    _add(ledger, [-5.0, -6.0, -7.0, -5.5], start=3)  # after the recorded verdict
    table = ledger.table().set_index("id")
    assert list(table.index) == ["H1", "H1b"]
    assert table.loc["H1", "n"] == 7 and table.loc["H1", "verdict"] != "supported"
    assert table.loc["H1b", "verdict"] == "refuted" and table.loc["H1b", "refines"] == "H1"
    assert table.loc["H1", "prediction"] == "test loss gap > 1"
    assert table.loc["H1b", "evidence_delay_s"] == pytest.approx(1.0)
    assert list(Ledger(ledger.path.with_name("empty.jsonl")).table().columns)[-2:] == \
        ["verdict", "evidence_delay_s"]


# ---------------------------------------------------------------- the hash chain


def _lines(ledger):
    return ledger.path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def chain(ledger):
    _add(ledger, [2.0, 2.5, 3.0])  # lines 2-4
    assert ledger.verify() == 4
    return ledger


def test_chain_links_every_record(chain):
    recs = chain.records()
    assert [r["seq"] for r in recs] == [0, 1, 2, 3] and recs[0]["prev"] == ""
    assert all(b["prev"] == a["hash"] for a, b in zip(recs, recs[1:]))


def test_verify_names_an_edited_byte(chain):
    lines = _lines(chain)
    lines[2] = lines[2].replace(b'"value":2.5', b'"value":2.6')
    chain.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerError, match=rf"ledger {chain.path} line 3: hash mismatch \(edited\?\)"):
        chain.verify()
    with pytest.raises(LedgerError, match="line 3"):
        chain.verdict("H1")  # reads verify too


def test_verify_names_a_line_that_is_not_json(chain):
    lines = _lines(chain)
    lines[1] = b"{" + lines[1][2:]
    chain.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerError, match="line 2: not a JSON object"):
        chain.verify()


def test_verify_names_a_removed_line(chain):
    lines = _lines(chain)
    chain.path.write_bytes(b"".join(lines[:1] + lines[2:]))
    with pytest.raises(LedgerError, match="line 2: seq=2 .*removed, inserted or reordered"):
        chain.verify()


def test_verify_names_swapped_lines(chain):
    lines = _lines(chain)
    lines[1], lines[2] = lines[2], lines[1]
    chain.path.write_bytes(b"".join(lines))
    with pytest.raises(LedgerError, match="line 2: seq=2"):
        chain.verify()


def test_verify_names_an_inserted_line(chain):
    lines = _lines(chain)
    chain.path.write_bytes(b"".join(lines[:3] + lines[2:]))
    with pytest.raises(LedgerError, match="line 4: seq=2"):
        chain.verify()


def test_an_old_unchained_ledger_fails_on_line_1(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps({"kind": "hypothesis", "id": "H1", "registered_at": "2024"}) + "\n")
    with pytest.raises(LedgerError, match=rf"ledger {path} line 1: no 'hash' \(old unchained ledger format"):
        Ledger(path).verify()


@pytest.mark.parametrize("tail", [b'{"kind":"evid', b'{"kind":"evidence"}'])
def test_a_torn_last_line_is_ignored_and_repaired(chain, tail):
    with open(chain.path, "ab") as f:
        f.write(tail)
    with pytest.warns(LedgerWarning, match=rf"ledger {chain.path} line 5: torn last line"):
        assert chain.values("H1") == [2.0, 2.5, 3.0]
    with pytest.warns(LedgerWarning, match="line 5"):
        chain.add_evidence("H1", _run(3, _after(chain)), 2.2)
    assert chain.verify() == 5 and chain.values("H1") == [2.0, 2.5, 3.0, 2.2]  # no warning left
    assert chain.path.read_bytes().endswith(b"}\n")


@pytest.mark.parametrize("tail", [b'{"kind":"evid\n', b"\n"])
def test_a_complete_invalid_last_line_is_an_edit_not_a_tear(chain, tail):
    with open(chain.path, "ab") as f:
        f.write(tail)
    with pytest.raises(LedgerError, match="line 5: not a JSON object"):
        chain.verify()


def test_an_invalid_line_before_the_last_is_an_error(chain):
    with open(chain.path, "ab") as f:
        f.write(b"garbage\n" + _lines(chain)[-1])
    with pytest.raises(LedgerError, match="line 5: not a JSON object"):
        chain.records()


def test_p_value_matches_the_interval_verdict_and_holm_corrects_a_family(tmp_path):
    from scidl.hypotheses import holm, p_value

    # one-sided p < 0.025 exactly when the two-sided 95 % interval clears the threshold
    for values in ([0.3, 0.5, 0.4, 0.6], [0.1, 0.9, -0.2, 0.4], [1.0, 1.2, 0.9]):
        low, high = mean_ci(values)[1:]
        assert (p_value(values, "mean", ">", 0.0) < 0.025) == (judge(">", 0.0, low, high) == "supported")
    for k, n in ((6, 6), (5, 6), (9, 10), (3, 10)):
        low, high = proportion_ci(k, n)[1:]
        assert (p_value([1.0] * k + [0.0] * (n - k), "proportion", ">", 0.5) < 0.025) == (low > 0.5)
    assert p_value([1.0], "mean", ">", 0.0) == 1.0  # one value: no test
    # Holm: 0.01 <= 0.025/3 fails, so nothing is rejected; a lone 0.01 is
    assert holm({"a": 0.01, "b": 0.012, "c": 0.02}) == {"a": False, "b": False, "c": False}
    assert holm({"a": 0.005, "b": 0.012, "c": 0.02}) == {"a": True, "b": True, "c": True}
    assert holm({"a": 0.009, "b": 0.02, "c": 0.001}) == {"c": True, "a": True, "b": True}
    assert holm({"a": 0.013, "b": 0.02, "c": 0.001}) == {"c": True, "a": False, "b": False}  # 0.013 > 0.025/2
    assert holm({"a": 0.01}) == {"a": True}


def test_family_verdicts_correct_supported_claims_and_record_them(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    hs = [Hypothesis(id=f"F{i}", scope={}, comparison=">", threshold=0.0, claim=f"claim {i}",
                     measurement="x", falsifier="interval reaches 0") for i in range(3)]
    for h in hs:
        ledger.register(h)
    strong, weak = [1.0, 1.1, 0.9, 1.05, 0.95], [0.05, 0.25, 0.5, 0.75, 0.95]  # weak: one-sided p = 0.019
    for i, values in enumerate((strong, weak, [-1.0, -1.1, -0.9, -1.05, -0.95])):
        for j, v in enumerate(values):
            ledger.add_evidence(f"F{i}", _run(10 * i + j, _after(ledger, f"F{i}")), v)
    unadjusted = {r.id: r.verdict for r in ledger.table().itertuples()}
    family = ledger.record_family_verdicts(["F0", "F1", "F2"]).set_index("id")
    assert family.unadjusted.to_dict() == unadjusted
    assert family.loc["F0", "verdict"] == "supported" and family.loc["F2", "verdict"] == "refuted"
    assert unadjusted["F1"] == "supported" and family.loc["F1", "verdict"] == "inconclusive (Holm)"
    recorded = [r for r in ledger.records("verdict")]
    assert [r["hypothesis"] for r in recorded] == ["F0", "F1", "F2"] and recorded[1]["unadjusted"] == "supported"
    assert ledger.verify() == len(ledger.records())  # the chain holds after several appends in one lock
    ledger.record_family_verdicts(["F0", "F1", "F2"])  # the same decisions again: recorded once
    assert len(ledger.records("verdict")) == 3
    with pytest.raises(LedgerError, match="ids"):
        ledger.family_verdicts([])


def test_a_scope_key_that_is_no_config_field_is_refused():
    with pytest.raises(LedgerError, match="scope key='task.pp' is not allowed"):
        _h(scope={"task.pp": 23})
    assert _h(scope={"task.p": 23, "task.n_digits": 2}).scope  # any registered phenomenon's field


# ---------------------------------------------------------------- anchors outside the file


def _forge(ledger, **edit):
    """Edit the first registration and recompute content_hash and every hash after it: a chain that
    verifies on its own."""
    from scidl.hypotheses import _sha256

    recs = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    recs[0].update(edit)
    recs[0]["content_hash"] = Hypothesis.from_dict(recs[0]).content_hash
    prev = ""
    for rec in recs:
        rec["prev"] = prev
        rec.pop("hash")
        rec["hash"] = prev = _sha256(rec)
    ledger.path.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in recs))


def test_a_recomputed_chain_with_an_edited_hypothesis_is_refused_by_its_anchors(chain, tmp_path):
    content = chain.hypothesis("H1").content_hash  # as printed when it was registered
    anchor_file = tmp_path / "anchor.json"
    saved = chain.save_anchor(anchor_file)
    assert saved == {"records": 4, "hash": chain.records()[-1]["hash"]}
    assert chain.verify(anchor=anchor_file, hypotheses={"H1": content}) == 4
    _add(chain, [2.2], start=3)  # records after the anchor do not break it
    assert chain.verify(anchor=saved) == 5
    before = chain.verdict("H1")["verdict"]
    _forge(chain, threshold=5.0)  # the prediction moved past the evidence: the verdict flips
    assert chain.verify() == 5 and chain.verdict("H1")["verdict"] != before  # the chain alone is fooled
    with pytest.raises(LedgerError, match="line 4: hash .* is not the anchor's"):
        chain.verify(anchor=anchor_file)
    with pytest.raises(LedgerError, match=f"line 1: hypothesis H1 has content hash .*, not the anchored {content}"):
        chain.verify(hypotheses={"H1": content})


def test_an_anchor_beyond_the_chain_means_records_were_removed(chain):
    saved = chain.anchor()
    chain.path.write_bytes(b"".join(_lines(chain)[:2]))
    with pytest.raises(LedgerError, match="has 2 records but the anchor holds 4"):
        chain.verify(anchor=saved)


@pytest.mark.parametrize("anchor", [{"records": 0, "hash": "0" * 64}, {"records": 1}, {"records": True, "hash": "0" * 64},
                                    [1, "x"], "/nonexistent/anchor.json"])
def test_a_malformed_anchor_is_refused_naming_it(chain, anchor):
    with pytest.raises(LedgerError, match="verify.anchor="):
        chain.verify(anchor=anchor)


@pytest.mark.parametrize("hypotheses", [{}, {"H1": "xyz"}, {"H1": "A" * 16}, ["H1"]])
def test_malformed_content_anchors_are_refused(chain, hypotheses):
    with pytest.raises(LedgerError, match="verify.hypotheses"):
        chain.verify(hypotheses=hypotheses)


def test_save_anchor_refuses_the_ledger_itself(chain):
    with pytest.raises(LedgerError, match="save_anchor.path"):
        chain.save_anchor(chain.path)
