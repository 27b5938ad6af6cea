"""The stream job's reader processes start without Apache Beam (ADR 053)."""

from __future__ import annotations

import subprocess
import sys


def test_the_reader_processes_code_does_not_import_beam():
    """What a spawned reader imports (connectors.kafka.fetch's ``_worker_init`` and ``_fetch_chunk``:
    range_decode) must not pull in Apache Beam: its import was 0.6-1 s of CPU per reader, on the
    cold start's critical path. The Beam source still wraps the same decoder."""
    code = ("import sys, inspect; import connectors.kafka.fetch as f, connectors.kafka.range_decode; "
            "src = inspect.getsource(f._worker_init) + inspect.getsource(f._fetch_chunk); "
            "print('apache_beam' in sys.modules, 'range_decode' in src, 'beam_source' in src)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False"], out.stdout + out.stderr
    from connectors.kafka import beam_source
    from connectors.kafka.range_decode import RangeDecoder

    assert isinstance(beam_source.ReadRangeBatches(None)._core, RangeDecoder)
