"""The short, readable summary printed after a run."""

from __future__ import annotations

from pathlib import Path

from pipelines import warehouse


def print_summary(db: Path) -> int:
    con = warehouse.connect(db, read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' "
            "ORDER BY table_name").fetchall()]
        print("\nrows per table:")
        for t in tables:
            (n,) = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()
            print(f"  {t:<24} {n:>10,}")
        last = con.execute(
            "SELECT suite, success, critical, successful, evaluated, failed_expectations, checked_at FROM dq_results "
            "QUALIFY row_number() OVER (PARTITION BY suite ORDER BY checked_at DESC, run_id DESC) = 1 ORDER BY suite").fetchall()
        print("\ndata quality (latest per suite):")
        for suite, ok, critical, good, total, failed, at in last:
            verdict = "PASS" if ok else ("FAIL" if critical else "WARN")
            print(f"  {suite:<24} {verdict} {good}/{total} expectations at {at:%Y-%m-%d %H:%M:%S}"
                  + (f"  failed: {failed}" if failed else ""))
        if not last:
            print("  (no checks run yet)")
        top = con.execute(
            "SELECT minute, exchange, symbol, side, liq_count, notional_usd FROM liquidations_1m "
            "ORDER BY notional_usd DESC, minute, exchange, symbol, side LIMIT 5").fetchall()
        print("\ntop liquidation minutes (USD):")
        for minute, ex, sym, side, n, usd in top:
            print(f"  {minute:%Y-%m-%d %H:%M} {ex:<16} {sym:<12} {side:<5} {n:>6,} liq  ${float(usd):>16,.2f}")
        rej = con.execute("SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY 2 DESC, reason").fetchall()
        if rej:
            print("\nrejected messages (in table rejects): " + ", ".join(f"{r}={n:,}" for r, n in rej))
        return 0
    finally:
        con.close()
