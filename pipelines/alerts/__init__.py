"""Cascade alert delivery (ADR 012): the outbox committed with the marts, a Kafka topic and webhooks.

* :func:`pipelines.alerts.outbox.enqueue` — in the cycle's analytics transaction, one pending
  delivery per new alert (episode and level) and sink;
* :class:`pipelines.alerts.delivery.AlertDispatcher` — the stream job's worker threads, one per sink;
* :mod:`pipelines.alerts.kafka_sink` — topic ``cascade_alerts.v1``, read back after a crash;
* :mod:`pipelines.alerts.webhook` — HTTP POST of JSON with retries, dead letters, redacted secrets;
* :mod:`pipelines.alerts.record` — the ``cascade_alert`` record (v2: + the map's fuel) (Avro) and its JSON form.
"""
