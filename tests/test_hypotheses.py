import json
import math

import pytest

from scidl.hypotheses import Hypothesis, Ledger, LedgerError, judge, mean_ci


def _h(**kw):
    base = dict(id="H1", claim="keeping key frequencies keeps the loss low",
                measurement="test loss gap", comparison=">", threshold=1.0,
                falsifier="gap <= 1", controls=("random frequencies",), config_hash="abc")
    return Hypothesis(**{**base, **kw})


def test_mean_ci_against_a_hand_computed_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert mean_ci([5.0])[1] == -math.inf


def test_verdicts_from_intervals():
    h = _h()
    assert judge(h, 1.5, 3.0) == "supported"
    assert judge(h, 0.1, 0.9) == "refuted"
    assert judge(h, 0.5, 1.5) == "inconclusive"
    assert judge(_h(comparison="<"), 0.1, 0.9) == "supported"


def test_prediction_cannot_be_edited_after_recording(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h())
    ledger.register(_h())  # identical: a notebook rerun is a no-op
    with pytest.raises(LedgerError, match=r"H1 was recorded at .* cannot be edited .*threshold.*refines='H1'"):
        ledger.register(_h(threshold=0.5))
    assert len(ledger.records("hypothesis")) == 1


def test_refinement_is_linked_and_must_name_a_known_hypothesis(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h())
    ledger.register(_h(id="H1b", threshold=0.5, refines="H1"))
    assert ledger.lineage("H1b") == ["H1", "H1b"]
    with pytest.raises(LedgerError, match="refines='H9'"):
        ledger.register(_h(id="H2", refines="H9"))


def test_evidence_needs_registration_and_is_timestamped_after_it(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(LedgerError, match="not registered"):
        ledger.add_evidence("H1", {0: 2.0})
    ledger.register(_h())
    ledger.add_evidence("H1", {0: 2.0, 1: 2.5, 2: 3.0})
    ledger.add_evidence("H1", {0: 99.0})  # the same seed again is not recorded twice
    assert ledger.evidence("H1") == [2.0, 2.5, 3.0]
    reg = ledger.records("hypothesis")[0]["registered_at"]
    assert all(e["recorded_at"] > reg for e in ledger.records("evidence"))
    v = ledger.verdict("H1")
    assert v["verdict"] == "supported" and v["ci_low"] > 1.0
    ledger.verdict("H1")
    assert len(ledger.records("verdict")) == 1
    table = ledger.table()
    assert table.loc[0, "verdict"] == "supported" and table.loc[0, "n_seeds"] == 3
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert all(json.loads(line)["kind"] in {"hypothesis", "evidence", "verdict"} for line in lines)


def test_bad_comparison_is_refused():
    with pytest.raises(LedgerError, match=r"comparison='>='"):
        _h(comparison=">=")


def test_verdict_without_evidence_is_untested_and_not_recorded(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.register(_h())
    assert ledger.verdict("H1")["verdict"] == "untested"
    assert ledger.records("verdict") == []
