"""The analytics graph shared by the backfill and the streaming cycle.

    events (RecordBatches) --SplitLateBatches--> late_events
                           --ComputeBars--------> bars_1m
    bars_1m window (touched minutes + lookback, read back from the mart by the job)
        --ComputeSymbolBars--> bars_1m_symbol
        --DetectCascades-----> cascades, cascade_alerts
        --ComputeOIDeltas----> oi_deltas
        --ScoreContagion-----> contagion

A backfill passes ``watermark_us=None`` (nothing is late in a rebuild) and the whole range's bars;
a streaming cycle passes the committed watermark and the bars of the touched minutes plus
``AnalyticsConfig.lookback_minutes()``, with ``emit_from_us`` = the first touched minute.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from pipelines.transforms.bars import LATE_TAG, ComputeBars, SplitLateBatches
from pipelines.transforms.cascades import DetectCascades
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.contagion import ScoreContagion
from pipelines.transforms.oi import ComputeOIDeltas
from pipelines.transforms.panel import ComputeSymbolBars


def build_bars(
    batches: beam.PCollection,
    config: AnalyticsConfig | None = None,
    watermark_us: Any = None,
    prior_bars: beam.PCollection | None = None,
) -> dict[str, beam.PCollection]:
    """RecordBatches of normalized events -> {"bars_1m", "late_events"}.

    ``watermark_us``: None, an int, or a side input (``beam.pvalue.AsSingleton``) holding the
    max event_time already committed; ``prior_bars``: stored bars_1m rows of the minutes the
    batches touch (streaming cycle), merged so a minute is extended, not replaced.
    """
    config = config or AnalyticsConfig()
    split = batches | "SplitLate" >> beam.ParDo(
        SplitLateBatches(config.allowed_lateness_s), watermark_us=watermark_us
    ).with_outputs(LATE_TAG, main="on_time")
    bars = split.on_time | "ComputeBars" >> ComputeBars(config, prior_bars=prior_bars)
    return {"bars_1m": bars, "late_events": split[LATE_TAG]}


def build_analytics(
    p_bars: beam.PCollection,
    config: AnalyticsConfig | None = None,
    emit_from_us: int | None = None,
    oi_reference: beam.PCollection | None = None,
) -> dict[str, beam.PCollection]:
    """bars_1m rows -> {"bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion"}.

    ``oi_reference``: optional (scope, OI USD) pairs from ``cascades.OI_REFERENCE_SQL`` so a
    streaming cycle need not read ``oi_reference_minutes`` of bars (see DetectCascades).
    """
    config = config or AnalyticsConfig()
    cascades = p_bars | "DetectCascades" >> DetectCascades(config, emit_from_us, oi_reference)
    return {
        "bars_1m_symbol": p_bars | "ComputeSymbolBars" >> ComputeSymbolBars(config, emit_from_us),
        "cascades": cascades["cascades"],
        "cascade_alerts": cascades["cascade_alerts"],
        "oi_deltas": p_bars | "ComputeOIDeltas" >> ComputeOIDeltas(config, emit_from_us),
        "contagion": p_bars | "ScoreContagion" >> ScoreContagion(config, emit_from_us),
    }


class AnalyticsGraph(beam.PTransform):
    """Composite form of build_analytics (output: dict of PCollections by mart name)."""

    def __init__(
        self,
        config: AnalyticsConfig | None = None,
        emit_from_us: int | None = None,
        oi_reference: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.config = config or AnalyticsConfig()
        self.emit_from_us = emit_from_us
        self.oi_reference = oi_reference

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        return build_analytics(bars, self.config, self.emit_from_us, self.oi_reference)
