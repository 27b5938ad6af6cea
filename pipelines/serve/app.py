"""`liqstream serve`: the live desk page, a Starlette app served by uvicorn (docs/adr/013).

Routes: ``/`` the desk (``?date=YYYY-MM-DD`` a past day, ``?base=BTC``, ``?hours=1|4|12|24``),
``/events`` its Server-Sent Events (the live view's panels, re-rendered when the data changes),
``/healthz``. Requests carry no SQL: parameters are checked against the data (``desk.parse_view``).

Reads go through ``queries.connect_read_only``, the connection `liqstream query` uses: the published
snapshot while the streaming job runs, the database otherwise, opened per render and closed at once,
so the desk never holds the file the job writes. The event stream watches ``warehouse.read_version``
(a stat, no connection) every ``poll_s`` and re-renders only when the snapshot or the database changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipelines import queries, warehouse
from pipelines.report import episodes_overlapping
from pipelines.serve import desk
from pipelines.serve.desk import DeskInputError, View

log = logging.getLogger("liqstream.serve")

#: the fragments the event stream replaces, by element id
PANELS = ("asof", "kpis", "live", "totals", "charts")
_KEEPALIVE_S = 15.0


class DeskUnavailable(RuntimeError):
    """The marts cannot be read now (no database yet, another writer holds the file)."""


def _params(request: Request) -> tuple[str | None, str | None, str | None]:
    q = request.query_params
    return q.get("date") or None, q.get("base") or None, q.get("hours") or None


def _open(db: Path) -> Any:
    try:
        return queries.connect_read_only(db)
    except FileNotFoundError as exc:
        raise DeskUnavailable(str(exc)) from exc
    except Exception as exc:  # a lock held past the retries: another process writes the file
        from pipelines.errors import explain

        raise DeskUnavailable(explain(exc)) from exc


def _source_text(db: Path) -> str:
    version = warehouse.read_version(db)
    path, mtime = Path(version[0][0]), version[0][1]
    kind = "the streaming job's published snapshot" if path == warehouse.snapshot_path(db) else "the database"
    when = f", written {datetime.fromtimestamp(mtime / 1e9, UTC):%H:%M:%S} UTC" if mtime else ""
    return f"{kind} {path.name}{when}"


def render_panels(db: Path, params: tuple[str | None, str | None, str | None]) -> tuple[View, dict[str, str]]:
    """Every panel of the page for these parameters, from one short read-only connection."""
    con = _open(db)
    try:
        view = desk.parse_view(con, *params)
        totals = desk.liquidation_totals(con, view)
        episodes = episodes_overlapping(con, view.t0, view.t1)
        panels = {
            "asof": (f"latest minute <b>{view.data_end - timedelta(minutes=1):%Y-%m-%d %H:%M}</b> UTC"
                     f"<span class='muted'> · read from {escape(_source_text(db))}</span>"),
            "kpis": desk.kpis(view, totals, episodes),
            "live": desk.live_panel(con, view, episodes),
            "totals": desk.totals_panel(view, totals),
            "charts": desk.charts_panel(con, view, episodes),
        }
    finally:
        con.close()
    return view, panels


# ---- the page ----------------------------------------------------------------------------------------
_CSS = """
*{box-sizing:border-box} body{margin:0;font:13px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
background:#e9edf2;color:#1b2430}
.top{background:#0f1923;color:#e6edf3;padding:10px 22px;display:flex;align-items:center;gap:18px;flex-wrap:wrap;
position:sticky;top:0;z-index:2;box-shadow:0 1px 4px rgba(0,0,0,.3)}
.top h1{font-size:16px;margin:0;letter-spacing:.3px} .top h1 span{color:#f0b429}
.top .asof{color:#c9d4df} .top .muted{color:#8a99a8} .top form{margin-left:auto;display:flex;gap:8px;align-items:center}
.top input,.top select,.top button{background:#1c2a37;color:#e6edf3;border:1px solid #34495e;border-radius:4px;
padding:4px 8px;font:inherit} .top a{color:#8cc4ff;text-decoration:none}
.pill{font-size:11px;font-weight:700;padding:2px 8px;border-radius:10px;letter-spacing:.5px}
.pill.live{background:#0f5132;color:#a3f7bf} .pill.live::before{content:'● ';color:#3ddc84}
.pill.off{background:#5c1a1a;color:#ffb4b4} .pill.stale{background:#5c4a0f;color:#ffe08a}
.pill.history{background:#243b53;color:#bcccdc}
main{padding:14px 22px 40px;max-width:1500px;margin:0 auto}
.kpis{display:grid;grid-template-columns:repeat(5,1fr);gap:10px;margin-bottom:12px}
.kpi{background:#fff;border-radius:6px;padding:10px 14px;border-left:4px solid #8a99a8;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.kpi b{display:block;font-size:20px;font-variant-numeric:tabular-nums} .kpi span{color:#52606d;font-size:12px}
.kpi.long{border-color:#d62728} .kpi.short{border-color:#2ca02c} .kpi.alert{border-color:#f0b429;background:#fff8e1}
.card{background:#fff;border-radius:6px;padding:12px 16px;margin-bottom:12px;box-shadow:0 1px 2px rgba(0,0,0,.06)}
.panel-head{display:flex;align-items:baseline;gap:10px;margin-bottom:6px} .panel-head h2{font-size:15px;margin:0}
.count{background:#1b2430;color:#fff;border-radius:9px;padding:0 7px;font-size:11px}
.muted{color:#7b8794} .empty{color:#7b8794;font-style:italic;margin:6px 0}
table.grid{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
.grid th,.grid td{padding:5px 8px;border-bottom:1px solid #edf0f3;text-align:left;white-space:nowrap}
.grid thead th{color:#52606d;font-weight:600;font-size:12px;background:#f7f9fb} .grid th.span{text-align:center;
border-left:1px solid #e1e6eb} .grid .num{text-align:right} td.long,th.long,.long{color:#c0262d} td.short,th.short,.short{color:#1e8a3a}
.grid td[data-side='long']{border-left:1px solid #edf0f3}
tr.episode.open{background:#fff8e1} .badge{font-size:10px;font-weight:700;padding:2px 6px;border-radius:3px}
.badge.open{background:#f0b429;color:#1b2430} .badge.closed{background:#d9e2ec;color:#334e68}
.badge.watch{background:#bcccdc;color:#102a43} .kind{margin-left:6px;font-size:10px;color:#52606d;border:1px solid #cbd2d9;
border-radius:3px;padding:0 4px} .level{font-weight:600} .level.l2{color:#b35c00} .level.l3,.level.l4{color:#c0262d}
.level small{font-weight:400;color:#7b8794}
.shares{min-width:190px} .sharebar{display:flex;height:6px;border-radius:3px;overflow:hidden;background:#eee}
.sharebar i{display:block;height:6px} .shares small{color:#52606d}
.totals{display:grid;grid-template-columns:1fr 1fr;gap:16px} .totals h3{font-size:13px;margin:4px 0}
.tabs{display:flex;gap:4px;margin-bottom:6px;flex-wrap:wrap} .tab{padding:4px 12px;border-radius:4px;background:#eef2f6;
color:#243b53;text-decoration:none;font-weight:600} .tab.on{background:#1b2430;color:#fff}
.spans a{padding:2px 8px;border-radius:3px;color:#8cc4ff} .spans a.on{background:#34495e;color:#fff}
svg.plot{display:block;margin:4px 0 8px}
@media (max-width:1100px){.totals{grid-template-columns:1fr}.kpis{grid-template-columns:repeat(2,1fr)}}
"""

# Replaces each panel the event stream sends; the pill says whether the page is following the job.
_SCRIPT = """
(function () {
  var pill = document.getElementById('conn');
  if (document.body.dataset.live !== '1' || !window.EventSource) return;
  var es = new EventSource('/events' + window.location.search);
  es.addEventListener('update', function (ev) {
    var panels = JSON.parse(ev.data);
    Object.keys(panels).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.innerHTML = panels[id];
    });
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    pill.className = 'pill live'; pill.textContent = 'LIVE'; pill.title = 'following the streaming job';
  });
  es.addEventListener('stale', function (ev) {
    pill.className = 'pill stale'; pill.textContent = 'STALE'; pill.title = ev.data;
  });
  es.onerror = function () { pill.className = 'pill off'; pill.textContent = 'RECONNECTING'; };
})();
"""


def _page(view: View, panels: dict[str, str]) -> str:
    spans = "".join(f"<a class='{'on' if h == view.span_h else ''}' href='{view.query(hours=h, date=None)}'>{h}h</a>"
                    for h in desk.SPANS_H)
    mode = ("<span id='conn' class='pill live'>LIVE</span>" if view.live
            else f"<span id='conn' class='pill history'>HISTORY {view.day.isoformat()}</span>")
    day_value = view.day.isoformat() if view.day else ""
    title = f"liqstream desk — {view.base or 'no data'}" + (f" — {view.day}" if view.day else " — live")
    return f"""<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>
<style>{_CSS}</style></head><body data-live='{1 if view.live else 0}' data-updates='0'>
<div class='top'><h1><span>liq</span>stream desk</h1>{mode}<span class='asof' id='asof'>{panels['asof']}</span>
<span class='spans'>{spans if view.live else "<a href='/'>back to live</a>"}</span>
<form method='get' action='/'><label for='date' class='muted'>history</label>
<input type='date' id='date' name='date' value='{day_value}' min='{view.first_day}' max='{view.last_day}'>
<button type='submit'>show day</button></form></div>
<main><div class='kpis' id='kpis'>{panels['kpis']}</div>
<section class='card' id='live'>{panels['live']}</section>
<section class='card' id='totals'>{panels['totals']}</section>
<section class='card' id='charts'>{panels['charts']}</section>
<p class='muted'>Times UTC. Figures read the analyst views (v_*), which hide quarantined loads. Episodes: red
longs liquidated (price falling), green short squeeze; level L1–L4 = severity tier reached (1, 5, 25, 125 ×
the OI-relative threshold); feedback &gt; 1 = self-sustaining. Definitions: docs/analytics.md.</p></main>
<script>{_SCRIPT}</script></body></html>"""


def _problem_page(status: int, message: str) -> HTMLResponse:
    heading = {400: "Bad request", 404: "Not found", 503: "The marts cannot be read now"}.get(status, "Desk error")
    # not ready (no database or no bars yet, a writer holding the file): the page tries again by itself
    retry = "<meta http-equiv='refresh' content='3'>" if status == 503 else ""
    body = f"""<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{retry}<title>{heading} — liqstream desk</title>
<style>{_CSS}</style></head><body data-live='0'><div class='top'><h1><span>liq</span>stream desk</h1>
<span id='conn' class='pill off'>{status}</span></div><main><section class='card problem'><h2>{escape(heading)}</h2>
<p id='problem'>{escape(message)}</p><p><a href='/'>Open the live desk</a></p></section></main></body></html>"""
    return HTMLResponse(body, status_code=status)


# ---- routes --------------------------------------------------------------------------------------------
def create_app(db: Path, poll_s: float = 0.5) -> Starlette:
    db = Path(db)

    def page(request: Request) -> Response:  # sync: Starlette runs it in its thread pool
        try:
            view, panels = render_panels(db, _params(request))
        except DeskInputError as exc:
            return _problem_page(exc.status, str(exc))
        except DeskUnavailable as exc:
            return _problem_page(503, str(exc))
        return HTMLResponse(_page(view, panels), headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        params = _params(request)

        async def stream() -> AsyncIterator[str]:
            sent: dict[str, str] = {}
            seen = None
            last_write = time.monotonic()
            while True:
                version = warehouse.read_version(db)
                if version != seen:
                    try:
                        _, panels = await run_in_threadpool(render_panels, db, params)
                    except Exception as exc:  # the page keeps what it shows and says it is stale; retried
                        if not isinstance(exc, (DeskInputError, DeskUnavailable)):
                            log.exception("desk render for the event stream failed")
                        yield f"event: stale\ndata: {json.dumps(str(exc))}\n\n"
                        last_write = time.monotonic()
                    else:
                        seen = version
                        changed = {k: v for k, v in panels.items() if sent.get(k) != v}
                        sent.update(changed)
                        if changed:
                            yield f"event: update\ndata: {json.dumps(changed)}\n\n"
                            last_write = time.monotonic()
                if time.monotonic() - last_write > _KEEPALIVE_S:
                    yield ": keepalive\n\n"  # a comment line: keeps proxies from closing an idle stream
                    last_write = time.monotonic()
                await asyncio.sleep(poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def healthz(request: Request) -> Response:
        return JSONResponse({"db": str(db), "reads": warehouse.read_version(db)[0][0]})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 204:
            return Response(status_code=204)
        return _problem_page(status, {404: f"no page {request.url.path!r}: the desk is at /",
                                      405: "the desk only answers GET requests"}.get(status, str(exc)))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("desk request %s failed", request.url.path)  # the traceback goes to the log, not the page
        return _problem_page(500, f"the desk could not render this page ({type(exc).__name__}); the server's log "
                                  "has the details")

    def favicon(request: Request) -> Response:
        return Response(status_code=204)

    return Starlette(routes=[Route("/", page), Route("/events", events), Route("/healthz", healthz),
                             Route("/favicon.ico", favicon)],
                     exception_handlers={HTTPException: http_error, Exception: server_error})


def serve(db: Path, host: str = "127.0.0.1", port: int = 8050, poll_s: float = 0.5) -> None:
    """Run the desk until interrupted (uvicorn, one process; the renders run in its thread pool)."""
    import uvicorn

    config = uvicorn.Config(create_app(db, poll_s), host=host, port=port, log_level="warning", ws="none",
                            lifespan="off", timeout_graceful_shutdown=1)
    uvicorn.Server(config).run()
