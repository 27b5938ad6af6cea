"""Kafka connection settings: one typed place, defaults that run, env overrides.

Names follow the Kafka client properties (``bootstrap.servers`` ->
``KAFKA_BOOTSTRAP_SERVERS``, ``sasl.mechanism`` -> ``KAFKA_SASL_MECHANISM`` ...),
so a cluster's existing client config maps one to one. Secrets are read from
the environment (or a file named by ``KAFKA_SASL_PASSWORD_FILE``) and never
printed: ``repr`` masks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    client_id: str = "liqstream"
    #: Topic layout used when liqstream creates topics (existing topics are left as they are).
    partitions: int = 3
    replication_factor: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    compression_type: str = "gzip"  # gzip | zstd | none (lz4/snappy need extra codec packages)
    #: how long liqstream's producers (the connectors', the replay's, the benches' feed) hold a record
    #: to batch it with others (linger.ms): every record waits up to this long before it is sent; each
    #: partition gets about one record batch per producer and linger. A broker that lists every batch of
    #: a partition per fetch (the local broker, Tansu 0.6) reads slower as those batches pile up (ADR 052)
    producer_linger_ms: int = 20
    request_timeout_ms: int = 30_000
    #: the bounded readers' first fetch max-wait; it steps up when fetches come back short (ADR 009, 035)
    fetch_max_wait_ms: int = 10
    #: the bounded (kafka-python) range readers ask each fetch for this many times the bytes the rest of
    #: the range is expected to take (bytes per offset learnt from their earlier fetches of the topic),
    #: and a fetch past the range's end for none: the local broker (Tansu 0.6) lists a partition's every
    #: record batch again and again within one fetch while it has bytes left to fill and a live feed
    #: keeps adding batches (ADR 056). 0 = no limit per fetch (as before ADR 056)
    reader_fetch_bytes_factor: float = 1.05
    #: the bounded (kafka-python) range readers parse each fetch response's record batches (message
    #: format v2) into columns with NumPy (connectors/kafka/batch_parse.py) instead of kafka-python's
    #: one Python object per record; a batch it cannot parse goes to kafka-python's own parsing (ADR 060).
    #: 0 (KAFKA_READER_BATCH_PARSE=0) = kafka-python parses every record, as before ADR 060
    reader_batch_parse: bool = True
    #: liqstream's own: a range read without progress for this long reconnects and resumes ...
    read_stall_ms: int = 5_000
    #: ... and fails (the cycle is retried) after this long without progress across reconnects
    read_timeout_ms: int = 30_000
    #: the log bounds (the plan, the lag probe) take each partition's log end from a fetch that asks
    #: for no bytes (its high watermark) instead of ListOffsets + a confirming fetch: on the local
    #: broker (Tansu 0.6) ListOffsets and any fetch that may return records list every record batch of
    #: the partition, a cost that grows with the log; a fetch of 0 bytes lists nothing (ADR 052)
    bounds_by_fetch: bool = True
    #: ... the max-wait of that fetch (it returns no record on Tansu, which then waits this long)
    bounds_fetch_max_wait_ms: int = 1
    #: ... and the log start (ListOffsets earliest, a listing too) is asked again at most this often
    #: per partition and process; in between the last answer stands (a log start moves only by
    #: retention, and a read below it restarts at the log start: ``auto_offset_reset`` earliest)
    log_start_refresh_s: float = 60.0
    #: kafka-python's pause when a bounded reader's poll has nothing to wait on (a topic it just
    #: switched to has no metadata yet) and its back-off between retries of a failed request; its
    #: default, 100 ms, was paid at each topic a reader switched to in a cycle (ADR 040)
    reader_retry_backoff_ms: int = 10
    #: the Kafka client of the bounded range readers (ADR 021, 028, 033): "kafka-python" (the default
    #: again since ADR 033: librdkafka readers stalled live runs; cause found and fixed in ADR 035) or
    #: "confluent-kafka" (librdkafka:
    #: faster bulk catch-up; `make test-confluent-kafka` runs the chaos tests with it);
    #: producers, admin and the lag probe stay on kafka-python
    #: (the default follows KAFKA_READER_CLIENT even without from_env: the test suites run either client)
    reader_client: str = field(default_factory=lambda: os.environ.get("KAFKA_READER_CLIENT") or "kafka-python")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> KafkaSettings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "KAFKA_" + f.name.upper()
            if key in env and env[key] != "":
                values[f.name] = _coerce(f.type, env[key])
        pw_file = env.get("KAFKA_SASL_PASSWORD_FILE")
        if pw_file and "sasl_password" not in values:
            values["sasl_password"] = Path(pw_file).read_text().strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_bootstrap(self, servers: str) -> KafkaSettings:
        return replace(self, bootstrap_servers=servers)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (producer, consumer, admin)."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            # kafka-python waits up to bootstrap_timeout_ms (30 s) to bootstrap each new client, apart
            # from the request timeout: with a frozen broker, the stream job's lag probe and its next
            # cycle each waited 30 s before failing. A bootstrap is a few requests: same bound.
            "bootstrap_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        if self.ssl_ca_location:
            kw["ssl_cafile"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            kw["ssl_certfile"] = self.ssl_certificate_location
        if self.ssl_key_location:
            kw["ssl_keyfile"] = self.ssl_key_location
        return kw

    def rdkafka_config(self) -> dict[str, Any]:
        """The same connection settings for a librdkafka (confluent-kafka) client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
            "client.id": self.client_id,
            "socket.timeout.ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism:
            conf.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password})
        for key, value in (("ssl.ca.location", self.ssl_ca_location),
                           ("ssl.certificate.location", self.ssl_certificate_location),
                           ("ssl.key.location", self.ssl_key_location)):
            if value:
                conf[key] = value
        return conf

    def describe(self) -> str:
        """Printable summary, without secrets."""
        auth = f" sasl={self.sasl_mechanism} user={self.sasl_username}" if self.sasl_mechanism else ""
        return f"{self.bootstrap_servers} ({self.security_protocol}{auth})"


def env_overrides(cls: Any, prefix: str, environ: dict[str, str] | None = None,
                  skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field -> value of each field of the dataclass ``cls`` set (non-empty) as ``<prefix><FIELD>`` in the
    environment, converted to the type of the field's default (``skip``: fields the caller reads itself)."""
    env = os.environ if environ is None else environ
    defaults = cls()
    out: dict[str, Any] = {}
    for f in fields(cls):
        raw = env.get(f"{prefix}{f.name.upper()}")
        if f.name not in skip and raw:
            out[f.name] = type(getattr(defaults, f.name))(raw)
    return out


def _coerce(type_name: Any, raw: str) -> Any:
    t = str(type_name)
    if t.startswith("int"):
        return int(raw)
    if t == "float":
        return float(raw)
    if t == "bool":
        if raw.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"not a boolean: {raw!r} (use 1/0, true/false, yes/no, on/off)")
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw
