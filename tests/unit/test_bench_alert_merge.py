"""bench/alert_latency.merge_into_results: one rate's run replaces that rate's figures only."""

from __future__ import annotations

import json
from pathlib import Path

from bench.alert_latency import merge_into_results, targets


def _step(rate: float, p95: float) -> dict:
    q = {"n": 4, "p50_s": p95 - 1, "p95_s": p95, "max_s": p95 + 1}
    return {"target_rate": rate, "commit": q, "topic": q}


def test_a_rate_run_alone_keeps_the_other_rates_and_the_other_targets(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    first = {"steps": [_step(10_000.0, 9.0), _step(25_000.0, 12.0)]}
    other = {"name": "streaming p95", "value": 1.0, "unit": "s", "target": 5.0, "op": "<=", "met": True}
    path.write_text(json.dumps({"stages": {}, "targets": [other]}))
    merge_into_results(first, path)
    merge_into_results({"steps": [_step(10_000.0, 4.0)]}, path)
    res = json.loads(path.read_text())
    steps = res["stages"]["alert_latency"]["steps"]
    assert [(s["target_rate"], s["commit"]["p95_s"]) for s in steps] == [(10_000.0, 4.0), (25_000.0, 12.0)]
    names = [t["name"] for t in res["targets"]]
    assert len(names) == len(set(names)) == 12 + 1  # 2 rates x (commit, topic) x (p50, p95, max) + other
    gated = [t for t in res["targets"] if t["target"] is not None and t["name"].startswith("alert")]
    assert [(t["name"], t["value"], t["met"]) for t in gated] == [
        ("alert latency @ 10,000/s: crossing event -> watch committed (p95)", 4.0, True)]
    assert other in res["targets"]
    assert {t["name"] for t in targets({"steps": [_step(25_000.0, 12.0)]})} <= set(names)
