"""Cascade market simulator: realistic raw venue feeds with liquidation cascades, and their truth.

``simulate(scenario, seed, **overrides)`` yields :class:`RawMessage` in each
venue's own wire format; :class:`Simulation` also carries the ground truth;
``write_capture`` writes a liqstream JSONL capture plus the truth JSON. The
model is described in ``docs/simulator.md``.
"""

from __future__ import annotations

from connectors.simulator.capture import write_capture
from connectors.simulator.runner import Simulation, build_scenario, parse_duration, simulate
from connectors.simulator.scenarios import PRESETS, Scenario, get_scenario
from connectors.simulator.truth import GroundTruthBuilder

__all__ = ["PRESETS", "GroundTruthBuilder", "Scenario", "Simulation", "build_scenario", "get_scenario",
           "parse_duration", "simulate", "write_capture"]
