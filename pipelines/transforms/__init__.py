"""Beam composite transforms of liqstream's analytics (definitions in docs/analytics.md)."""

from pipelines.transforms.bars import (
    ComputeBars,
    RecordsToBatches,
    SplitLateBatches,
    SplitLateEvents,
    WindowIntoBars,
    records_to_batches,
)
from pipelines.transforms.cascades import DetectCascades
from pipelines.transforms.config import AnalyticsConfig
from pipelines.transforms.contagion import ScoreContagion
from pipelines.transforms.graph import AnalyticsGraph, build_analytics, build_bars
from pipelines.transforms.oi import ComputeOIDeltas
from pipelines.transforms.panel import ComputeSymbolBars

__all__ = [
    "AnalyticsConfig",
    "AnalyticsGraph",
    "ComputeBars",
    "ComputeOIDeltas",
    "ComputeSymbolBars",
    "DetectCascades",
    "RecordsToBatches",
    "ScoreContagion",
    "SplitLateBatches",
    "SplitLateEvents",
    "WindowIntoBars",
    "build_analytics",
    "build_bars",
    "records_to_batches",
]
