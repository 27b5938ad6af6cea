"""The analytics graph shared by the backfill and the streaming cycle.

    events (RecordBatches) --SplitLateBatches--> late_events
                           --ComputeBars--------> bars_1m
    bars_1m window (touched minutes + lookback, read back from the mart by the job)
        --BasePanels (rows) or ReadBasePanels (per-base Parquet, the jobs)--> (base, BaseBars)
            --SymbolBarsFromPanels----> bars_1m_symbol
            --DetectCascadesOnPanels--> cascades, cascade_alerts
            --OIDeltasFromPanels------> oi_deltas
            --ScoreContagionOnPanels--> contagion
            --LiquidationMapFromPanels--> liquidation_levels, liquidation_fuel (+ its state)

Each base's bars are grouped and aggregated into its panel once; the four analytics share it
(each gathers only small per-base arrays for its market level).

A backfill passes ``watermark_us=None`` (nothing is late in a rebuild) and the whole range's bars;
a streaming cycle passes the committed watermark and the bars of the touched minutes plus
``AnalyticsConfig.lookback_minutes()``, with ``emit_from_us`` = the first touched minute.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from pipelines.transforms.bars import LATE_TAG, ComputeBars, SplitLateBatches
from pipelines.transforms.cascades import DetectCascadesOnPanels
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.contagion import ScoreContagionOnPanels
from pipelines.transforms.liqmap import FUEL_TAG, LEVELS_TAG, STATE_TAG, LiquidationMapFromPanels
from pipelines.transforms.oi import OIDeltasFromPanels, OISamplesFromPanels
from pipelines.transforms.panel import AnalyticsTransform, BasePanels, SymbolBarsFromPanels


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
    """bars_1m rows -> {"bars_1m_symbol", "cascades", "cascade_alerts", "oi_deltas", "contagion",
    "liquidation_levels", "liquidation_fuel"} (+ "liquidation_map_state", the estimator's books to
    store, when build_analytics_on_panels gets ``liqmap_state``: a streaming cycle).

    ``oi_reference``: optional (scope, OI USD) pairs from ``cascades.OI_REFERENCE_SQL`` so a
    streaming cycle need not read ``oi_reference_minutes`` of bars (see DetectCascades).
    """
    config = config or AnalyticsConfig()
    panels = p_bars | "BasePanels" >> BasePanels(config)
    return build_analytics_on_panels(panels, config, emit_from_us, oi_reference)


def build_analytics_on_panels(
    panels: beam.PCollection,
    config: AnalyticsConfig | None = None,
    emit_from_us: int | None = None,
    oi_reference: beam.PCollection | None = None,
    closed_before_us: int | None = None,
    liqmap_state: dict | None = None,
    window: dict | None = None,
) -> dict[str, beam.PCollection]:
    """(base, BaseBars) elements (``BasePanels`` or ``ReadBasePanels``) -> the analytic marts, as
    :func:`build_analytics`. ``closed_before_us`` (the stream job's open-minute watch, ADR 018):
    cascades and alerts from the closed minutes only, plus "cascade_open_starts".

    ``window`` (a windowed backfill, ADR 036): {"samples": (lo_us, hi_us), "carry": (lo_us, hi_us)
    or None}. Instead of "oi_deltas", "oi_samples" (the oi_deltas inputs at their sampled minutes in
    the samples range, :class:`OISamplesFromPanels`), and "cascade_carry" (each scope's OI and the
    market index in the carry range, for the next window's ``oi_reference``: :class:`CarriedOI`)."""
    config = config or AnalyticsConfig()
    carry = None if window is None else window.get("carry")
    cascades = panels | "DetectCascades" >> DetectCascadesOnPanels(config, emit_from_us, oi_reference,
                                                                  closed_before_us=closed_before_us,
                                                                  carry_range=carry)
    # liqmap_state: LiquidationMapFromPanels' state_path / settled_us / data_from_us (a streaming cycle)
    liqmap = (panels | "LiquidationMap" >> LiquidationMapFromPanels(config, emit_from_us, **(liqmap_state or {}))
              if config.liqmap_enabled else {})
    marts = {
        "bars_1m_symbol": panels | "ComputeSymbolBars" >> SymbolBarsFromPanels(emit_from_us),
        **cascades,
        "contagion": panels | "ScoreContagion" >> ScoreContagionOnPanels(config, emit_from_us),
    }
    if window is None:
        marts["oi_deltas"] = panels | "ComputeOIDeltas" >> OIDeltasFromPanels(config, emit_from_us)
    else:
        marts["oi_samples"] = panels | "OISamples" >> OISamplesFromPanels(config, *window["samples"])
    if liqmap:
        marts.update({"liquidation_levels": liqmap[LEVELS_TAG], "liquidation_fuel": liqmap[FUEL_TAG]})
    if liqmap and liqmap_state is not None:
        marts["liquidation_map_state"] = liqmap[STATE_TAG]
    return marts


class AnalyticsGraph(AnalyticsTransform):
    """Composite form of build_analytics (output: dict of PCollections by mart name)."""

    def expand(self, bars: beam.PCollection) -> dict[str, beam.PCollection]:
        return build_analytics(bars, self.config, self.emit_from_us, self.oi_reference)
