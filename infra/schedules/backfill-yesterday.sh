#!/usr/bin/env bash
# Daily backfill of the previous UTC day, with retries (infra/schedules/crontab calls this).
#
#   backfill-yesterday.sh [extra `liqstream backfill` flags...]
#   backfill-yesterday.sh --runner dask --dask-scheduler tcp://HOST:8786 --staging /mnt/shared/staging
#
# Exit codes (those of `liqstream backfill`, see `liqstream --help`):
#   0  the day was rebuilt and published
#   3  the data-quality gate failed: NOTHING was published (the transaction rolled back). Not
#      retried: the same input would fail the same way; a human looks at dq_results first.
#   other non-zero  (broker or disk trouble, an unreachable Dask scheduler (2), a crash): retried up to LIQSTREAM_BACKFILL_RETRIES
#      times with exponential backoff, then the last code is returned.
#
# Environment:
#   LIQSTREAM_BIN                  the CLI (default: `liqstream` on PATH)
#   LIQSTREAM_BACKFILL_RETRIES     attempts after the first failure (default 3)
#   LIQSTREAM_BACKFILL_BACKOFF_S   first wait in seconds, doubled each retry (default 60)
#   LIQSTREAM_BACKFILL_DAY         the day to rebuild, YYYY-MM-DD (default: yesterday, UTC)
#   LIQSTREAM_BACKFILL_SOURCE      archive | capture | kafka (default archive)
#   LIQSTREAM_BACKFILL_LOCK        lock file preventing overlapping runs (default /tmp/liqstream-backfill.lock)
# plus everything liqstream itself reads (LIQSTREAM_DB, KAFKA_BOOTSTRAP_SERVERS, ...).
set -u -o pipefail

LIQSTREAM_BIN=${LIQSTREAM_BIN:-liqstream}
RETRIES=${LIQSTREAM_BACKFILL_RETRIES:-3}
BACKOFF=${LIQSTREAM_BACKFILL_BACKOFF_S:-60}
SOURCE=${LIQSTREAM_BACKFILL_SOURCE:-archive}
LOCK=${LIQSTREAM_BACKFILL_LOCK:-/tmp/liqstream-backfill.lock}
EXIT_DQ_FAILED=3

log() { printf '%s backfill-yesterday: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

yesterday_utc() {
    # GNU date, then BSD date, then Python (the liqstream venv always has one)
    date -u -d 'yesterday' +%Y-%m-%d 2>/dev/null \
        || date -u -v-1d +%Y-%m-%d 2>/dev/null \
        || python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) - d.timedelta(days=1)).date())'
}

DAY=${LIQSTREAM_BACKFILL_DAY:-$(yesterday_utc)}
if [[ ! $DAY =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]]; then
    log "not a day: '$DAY' (want YYYY-MM-DD)"
    exit 2
fi

# one run at a time: a retrying run that overlaps the next day's cron would fight for the DuckDB writer lock
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    if ! flock -n 9; then
        log "another backfill holds $LOCK: not starting"
        exit 75  # EX_TEMPFAIL
    fi
fi

attempt=0
wait_s=$BACKOFF
while :; do
    attempt=$((attempt + 1))
    log "attempt $attempt: $LIQSTREAM_BIN backfill --from $DAY --to $DAY --source $SOURCE $*"
    "$LIQSTREAM_BIN" backfill --from "$DAY" --to "$DAY" --source "$SOURCE" "$@"
    rc=$?
    if [[ $rc -eq 0 ]]; then
        log "day $DAY rebuilt and published (attempt $attempt)"
        exit 0
    fi
    if [[ $rc -eq $EXIT_DQ_FAILED ]]; then
        log "day $DAY failed its data-quality gate: nothing published, not retrying (see dq_results)"
        exit $EXIT_DQ_FAILED
    fi
    if [[ $attempt -gt $RETRIES ]]; then
        log "day $DAY failed with exit code $rc after $attempt attempts: giving up"
        exit $rc
    fi
    log "exit code $rc: retrying in ${wait_s}s"
    sleep "$wait_s"
    wait_s=$((wait_s * 2))
done
