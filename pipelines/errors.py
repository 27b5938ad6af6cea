"""Turn the errors users meet into messages that say what to do."""

from __future__ import annotations


def explain(exc: BaseException) -> str:
    from connectors.kafka.local_broker import BrokerError
    from connectors.kafka.reader import OffsetsAheadOfLog, ReadTimeout
    from pipelines.warehouse import ClusterMismatch

    if isinstance(exc, (BrokerError, OffsetsAheadOfLog, ReadTimeout, ClusterMismatch, FileNotFoundError)):
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    if "Could not set lock on file" in text or "Conflicting lock" in text:
        return (f"{text}\nThe database is open for writing by another process (the streaming job?). "
                "Query it read-only with `liqstream query`, or stop the writer first.")
    return text + "  (run with -v for the traceback)"
