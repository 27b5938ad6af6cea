"""Generation speed of the simulator (what ``make bench`` prints): raw messages per second.

    python -m connectors.simulator.bench [--duration 30m] [--trades-per-second 400]

Three figures on the same run: generating the messages only, generating and
writing a plain JSONL capture, and writing a gzip capture.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from connectors.simulator.capture import write_capture
from connectors.simulator.runner import Simulation


def bench(scenario: str = "A", duration: str = "30m", trades_per_second: float = 400.0, seed: int = 7) -> dict:
    sim = Simulation(scenario, seed, duration=duration, trades_per_second=trades_per_second)
    t = time.perf_counter()
    n = sum(1 for _ in sim.messages())
    gen_s = time.perf_counter() - t
    out: dict = {"scenario": scenario, "duration": duration, "trades_per_second": trades_per_second,
                 "messages": n, "generate_msgs_per_s": round(n / gen_s)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, key in (("b.jsonl", "write_jsonl_msgs_per_s"), ("b.jsonl.gz", "write_gzip_msgs_per_s")):
            summary = write_capture(Path(tmp) / name, scenario, seed, duration=duration,
                                    trades_per_second=trades_per_second)
            out[key] = summary["messages_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="A")
    ap.add_argument("--duration", default="30m")
    ap.add_argument("--trades-per-second", type=float, default=400.0)
    args = ap.parse_args(argv)
    print(json.dumps(bench(args.scenario, args.duration, args.trades_per_second)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
