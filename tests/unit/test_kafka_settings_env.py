"""KafkaSettings.from_env: each field's KAFKA_<NAME> variable, coerced to the field's type (ADR 052)."""

from __future__ import annotations

import pytest

from connectors.config import KafkaSettings


def test_defaults_without_variables() -> None:
    s = KafkaSettings.from_env({})
    assert (s.bounds_by_fetch, s.bounds_fetch_max_wait_ms, s.log_start_refresh_s, s.producer_linger_ms) == \
        (True, 1, 60.0, 20)


@pytest.mark.parametrize(("raw", "expected"), [("0", False), ("false", False), ("No", False), ("off", False),
                                               ("1", True), ("TRUE", True), ("yes", True), (" on ", True)])
def test_booleans(raw: str, expected: bool) -> None:
    assert KafkaSettings.from_env({"KAFKA_BOUNDS_BY_FETCH": raw}).bounds_by_fetch is expected


def test_a_word_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        KafkaSettings.from_env({"KAFKA_BOUNDS_BY_FETCH": "maybe"})


def test_numbers() -> None:
    s = KafkaSettings.from_env({"KAFKA_LOG_START_REFRESH_S": "2.5", "KAFKA_PRODUCER_LINGER_MS": "100",
                                "KAFKA_BOUNDS_FETCH_MAX_WAIT_MS": "3"})
    assert (s.log_start_refresh_s, s.producer_linger_ms, s.bounds_fetch_max_wait_ms) == (2.5, 100, 3)
    assert isinstance(s.log_start_refresh_s, float)
