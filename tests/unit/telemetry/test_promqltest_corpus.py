"""Prometheus's own PromQL test scripts run through the engine (read from
/work/shared/promqltest, never copied here): the pass rate must not fall below what the
engine achieves today. Cases that need native histograms count as unsupported, and
unsupported cases count against the rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.servers.telemetry.promql.promqltest import run_paths, table

CORPUS = Path("/work/shared/promqltest")
HEAD = CORPUS / "head"

# floors: passed / all eval cases (unsupported included) per file, and in total
HEAD_FLOORS = {
    "aggregators.test": 0.76, "at_modifier.test": 1.0, "functions.test": 0.74,
    "histograms.test": 0.50, "operators.test": 0.66, "range_queries.test": 0.88,
    "selectors.test": 1.0, "staleness.test": 1.0,
}
HEAD_TOTAL_FLOOR = 0.72


@pytest.mark.skipif(not HEAD.is_dir(), reason="the Prometheus test corpus is not present")
def test_head_corpus_pass_rate_stays_at_its_floor() -> None:
    reports = run_paths([HEAD])
    print("\n" + table(reports))
    failures = [f"{o.file}:{o.line}: {o.query}: {o.reason}" for r in reports
                for o in r.outcomes if o.status == "failed"]
    assert failures == [], "\n".join(failures)
    total = sum(r.cases for r in reports)
    passed = sum(r.count("passed") for r in reports)
    assert passed / total >= HEAD_TOTAL_FLOOR
    for report in reports:
        floor = HEAD_FLOORS.get(report.file, 0.0)
        assert report.count("passed") / report.cases >= floor, report.file


@pytest.mark.skipif(not (CORPUS / "v2.42.0").is_dir(),
                    reason="the Prometheus test corpus is not present")
def test_v2_corpus_runs_without_crashing() -> None:
    """Prometheus 2.x closed its windows at both ends and had other names
    (``holt_winters``), so only a floor well below the 3.x one holds."""
    reports = run_paths([CORPUS / "v2.42.0"])
    print("\n" + table(reports))
    total = sum(r.cases for r in reports)
    assert sum(r.count("passed") for r in reports) / total >= 0.75
