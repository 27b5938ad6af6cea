"""Score detected cascade episodes against a simulator run's ground truth.

The truth (``connectors/simulator/truth.py``) lists episodes per scope (``market`` and each
base) with ``[start_us, end_us)``, direction ``long``/``short`` and liquidated USD by side. A true
episode is **recalled** when a detected episode of the same scope and direction overlaps it; a
detected episode is **precise** when it overlaps a true one. Per recalled episode: time to alert
= detected_ts - true start (event time), and the USD error of the best-overlapping detection
(long + short liquidated USD) relative to the truth's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from pipelines.transforms.bars import ts_to_micros
from pipelines.transforms.cascades import LONG, SHORT

_DIRECTION = {"long": LONG, "short": SHORT}


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def score_episodes(detected: Iterable[dict], truth: dict[str, Any]) -> dict[str, Any]:
    det = [
        {**d, "_s": ts_to_micros(d["start_ts"]), "_e": ts_to_micros(d["end_ts"]), "_a": ts_to_micros(d["detected_ts"])}
        for d in detected
    ]
    true_eps = truth["episodes"]
    recalled, delays, usd_err, misses = 0, [], [], []
    for te in true_eps:
        cands = [d for d in det if d["scope"] == te["scope"] and d["direction"] == _DIRECTION[te["direction"]]
                 and _overlap(d["_s"], d["_e"], te["start_us"], te["end_us"]) > 0]
        if not cands:
            misses.append(te)
            continue
        recalled += 1
        best = max(cands, key=lambda d: _overlap(d["_s"], d["_e"], te["start_us"], te["end_us"]))
        delays.append((min(d["_a"] for d in cands) - te["start_us"]) / 1e6)
        t_usd = te["liquidated_long_usd"] + te["liquidated_short_usd"]
        d_usd = float(best["long_liq_usd"]) + float(best["short_liq_usd"])
        usd_err.append(abs(d_usd / t_usd - 1.0) * 100.0 if t_usd else 0.0)
    false = [d for d in det if not any(
        d["scope"] == te["scope"] and d["direction"] == _DIRECTION[te["direction"]]
        and _overlap(d["_s"], d["_e"], te["start_us"], te["end_us"]) > 0 for te in true_eps)]
    n_true, n_det = len(true_eps), len(det)
    return {
        "true_episodes": n_true,
        "detected_episodes": n_det,
        "recall": recalled / n_true if n_true else 1.0,
        "precision": (n_det - len(false)) / n_det if n_det else 1.0,
        "median_time_to_alert_s": statistics.median(delays) if delays else None,
        "max_time_to_alert_s": max(delays) if delays else None,
        "median_usd_error_pct": statistics.median(usd_err) if usd_err else None,
        "max_usd_error_pct": max(usd_err) if usd_err else None,
        "share_usd_within_5pct": sum(e <= 5.0 for e in usd_err) / len(usd_err) if usd_err else None,
        "missed": [(m["scope"], m["start"], m["direction"]) for m in misses],
        "false": [(f["scope"], str(f["start_ts"]), f["direction"]) for f in false],
    }
