"""``liqstream simulate``: arguments and the command (the lead wires the subcommand).

    liqstream simulate --scenario A --seed 7 --out data/sim/A.jsonl.gz [--truth FILE.json]
    liqstream simulate --scenario C --kafka [--speed 60]
    liqstream simulate --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from connectors.simulator.capture import default_truth_path, write_capture
from connectors.simulator.runner import Simulation, paced
from connectors.simulator.scenarios import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="A", help="preset name (see --list); default A")
    parser.add_argument("--seed", type=int, default=7, help="random seed (runs are deterministic per seed)")
    dest = parser.add_mutually_exclusive_group()
    dest.add_argument("--out", help="capture file to write (liqstream JSONL; gzip if it ends in .gz)")
    dest.add_argument("--kafka", action="store_true", help="normalize and publish straight to Kafka")
    parser.add_argument("--truth", help="ground-truth JSON path (default: beside --out, or data/sim/<name>.truth.json)")
    parser.add_argument("--speed", type=float, default=None,
                        help="pace the output at X times real time (default: as fast as possible)")
    parser.add_argument("--duration", help="run length, e.g. 90m, 6h, 1d (default: the preset's)")
    parser.add_argument("--symbols", help="comma-separated bases to keep, e.g. BTC,ETH,SOL (BTC required)")
    parser.add_argument("--venues", help="comma-separated venues to keep, e.g. binance-futures,okx")
    parser.add_argument("--scale", type=float, default=None, help="multiply the preset's trades per second")
    parser.add_argument("--trades-per-second", type=float, default=None, help="trade messages per second (all pairs)")
    parser.add_argument("--step-s", type=float, default=None, help="model time step in seconds")
    parser.add_argument("--no-price-impact", action="store_true",
                        help="forced orders do not move price (switches the cascade feedback off)")
    parser.add_argument("--list", action="store_true", help="list the presets, one line each, and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict:
    return {
        "duration": args.duration,
        "symbols": args.symbols.split(",") if args.symbols else None,
        "venues": args.venues.split(",") if args.venues else None,
        "scale": args.scale,
        "trades_per_second": args.trades_per_second,
        "step_s": args.step_s,
    }


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, sc in PRESETS.items():
            hours = sc.duration_s / 3600
            print(f"{name:5s} {hours:6.0f} h  step {sc.step_s:g} s  {sc.summary}")
        return 0
    overrides = _overrides(args)
    progress = not args.no_progress
    try:
        if args.kafka:
            return _run_kafka(args, overrides, progress)
        out = args.out or f"data/sim/{args.scenario}-{args.seed}.jsonl.gz"
        if args.speed:
            return _run_paced_file(args, out, overrides, progress)
        summary = write_capture(out, args.scenario, args.seed, truth_path=args.truth, progress=progress,
                                price_impact=not args.no_price_impact, **overrides)
    except (KeyError, ValueError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _run_paced_file(args: argparse.Namespace, out: str, overrides: dict, progress: bool) -> int:
    from connectors.sources.capture import CaptureWriter

    sim = Simulation(args.scenario, args.seed, price_impact=not args.no_price_impact, **overrides)
    with CaptureWriter(out) as w:
        for msg in paced(sim.messages(), args.speed):
            w.write(msg.venue, msg.received_at_us, msg.raw, msg.channel)
    sim.truth.write(args.truth or default_truth_path(out))
    print(json.dumps({"out": out, "messages": w.count}))
    return 0


def _run_kafka(args: argparse.Namespace, overrides: dict, progress: bool) -> int:
    from connectors.config import KafkaSettings
    from connectors.kafka.publish import publish_raw_stream

    sim = Simulation(args.scenario, args.seed, price_impact=not args.no_price_impact, **overrides)
    msgs = paced(sim.messages(), args.speed) if args.speed else sim.messages()
    started = time.perf_counter()
    counters = publish_raw_stream(msgs, KafkaSettings.from_env(), progress=progress)
    truth_path = Path(args.truth or f"data/sim/{sim.scenario.name}-{args.seed}.truth.json")
    sim.truth.write(truth_path)
    summary = counters.summary() if hasattr(counters, "summary") else dict(counters)
    print(json.dumps({"truth": str(truth_path), "seconds": round(time.perf_counter() - started, 2), **summary}))
    return 0
