"""Job settings: one typed place, defaults that run, overridable by env var and CLI flag.

Each field ``name`` reads env ``LIQSTREAM_<NAME>``; Kafka connection settings
come from ``connectors.config.KafkaSettings`` (``KAFKA_*``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from connectors.config import KafkaSettings


@dataclass(frozen=True)
class JobSettings:
    db: Path = Path("data/liqstream.duckdb")
    data_dir: Path = Path("data")
    #: largest offset range one Beam work item reads (ranges are split to spread over workers)
    max_range: int = 200_000
    #: Beam FnApiRunner workers for bounded runs (1 = in-process, fastest for small cycles)
    workers: int = 1
    #: worker processes of a backfill (each runs whole days' work items; 2 = both cores here)
    backfill_workers: int = 2
    #: reader processes of the stream job (connectors.kafka.fetch; 1 = read inside the Beam pipeline)
    fetch_workers: int = 2
    #: seconds between progress lines of a long load / stream catch-up (events read of to read, rate)
    progress_every_s: int = 5
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> JobSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {"kafka": KafkaSettings.from_env(env)}
        for f in fields(cls):
            key = "LIQSTREAM_" + f.name.upper()
            if f.name != "kafka" and env.get(key):
                values[f.name] = Path(env[key]) if "Path" in str(f.type) else int(env[key])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> JobSettings:
        return replace(self, **changes)
