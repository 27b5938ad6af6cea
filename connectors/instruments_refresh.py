"""Refresh the bundled instrument metadata from the venues' instrument endpoints.

``refresh(venue)`` fetches a venue's public instrument endpoint(s) over HTTPS
(urllib, no extra dependency), converts the payload with the venue's pure
``convert_<venue>(payload) -> list[Instrument]`` and writes
``connectors/exchanges/instruments/<venue>.json`` with
:func:`connectors.instruments.write_instrument_file`. The converters are
tested offline against the REST captures in ``tests/fixtures/venues``; the
fetch itself needs internet and is exercised only by ``liqstream instruments
refresh``.

``REFRESHERS`` maps a venue id to its refresher so the CLI can call
``REFRESHERS[venue](out)`` (or :func:`refresh`); other venues add their entry
here.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.instruments import Instrument, normalize_asset, write_instrument_file

HTTP_TIMEOUT_S = 30.0
USER_AGENT = "liqstream-instruments-refresh/1"

# Binance reports this far-future deliveryDate (2100-12-25) for perpetuals.
_BINANCE_PERPETUAL_DELIVERY_MS = 4133404800000


def fetch_json(url: str, timeout: float = HTTP_TIMEOUT_S) -> Any:
    """GET ``url`` and parse its JSON body (raises on HTTP errors and bad JSON)."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https URLs below
        return json.loads(resp.read())


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Binance COIN-M -------------------------------------------------------------------------

BINANCE_DELIVERY_URL = "https://dapi.binance.com/dapi/v1/exchangeInfo"


def convert_binance_delivery(payload: dict) -> list[Instrument]:
    """``/dapi/v1/exchangeInfo`` -> inverse instruments (contractSize USD per contract).

    Symbols that are not trading (settled quarterlies still listed) are kept:
    replaying an old capture needs them.
    """
    out = []
    for s in payload["symbols"]:
        ctype = s.get("contractType", "")
        if ctype == "PERPETUAL":
            kind, expiry = "perpetual", None
        elif ctype in ("CURRENT_QUARTER", "NEXT_QUARTER") or (
            s.get("deliveryDate") and int(s["deliveryDate"]) != _BINANCE_PERPETUAL_DELIVERY_MS
        ):
            kind, expiry = "future", int(s["deliveryDate"])
        else:
            continue
        out.append(Instrument(
            venue="binance-delivery",
            symbol=s["symbol"],
            base=normalize_asset(s["baseAsset"]),
            quote=s["quoteAsset"].upper(),
            kind=kind,
            expiry_ms=expiry,
            contract_value=float(s["contractSize"]),
            inverse=True,
        ))
    return out


def refresh_binance_delivery(out: Path | None = None) -> Path:
    payload = fetch_json(BINANCE_DELIVERY_URL)
    return write_instrument_file("binance-delivery", convert_binance_delivery(payload),
                                 BINANCE_DELIVERY_URL, _now_iso(), out)


# --- OKX ------------------------------------------------------------------------------------

OKX_URLS = tuple(f"https://www.okx.com/api/v5/public/instruments?instType={t}" for t in ("SPOT", "SWAP", "FUTURES"))


def _okx_rows(payload: dict | Iterable[dict]) -> Iterable[dict]:
    pages = [payload] if isinstance(payload, dict) else list(payload)
    for page in pages:
        if str(page.get("code", "0")) != "0":
            raise ValueError(f"OKX instruments error code {page.get('code')}: {page.get('msg')}")
        yield from page["data"]


def convert_okx(payload: dict | Iterable[dict]) -> list[Instrument]:
    """``/api/v5/public/instruments`` response(s) (SPOT, SWAP, FUTURES) -> instruments.

    Linear contracts: ``ctVal x ctMult`` base units per contract (``ctValCcy`` is
    the base). Inverse: ``ctVal x ctMult`` USD per contract (``ctValCcy`` USD).
    Options are skipped (liqstream does not use them).
    """
    out = []
    for r in _okx_rows(payload):
        itype = r["instType"]
        if itype == "SPOT":
            out.append(Instrument("okx", r["instId"], normalize_asset(r["baseCcy"]), r["quoteCcy"].upper(),
                                  "spot", None, 1.0, False))
            continue
        if itype not in ("SWAP", "FUTURES"):
            continue
        base, quote = r["uly"].split("-")[:2]
        base = normalize_asset(base)
        mult = float(r.get("ctMult") or 1)
        value = float(r["ctVal"]) * mult
        inverse = r["ctType"] == "inverse"
        if inverse and r["ctValCcy"].upper() != "USD":
            raise ValueError(f"{r['instId']}: inverse contract valued in {r['ctValCcy']}, expected USD")
        if not inverse and normalize_asset(r["ctValCcy"]) != base:
            raise ValueError(f"{r['instId']}: linear contract valued in {r['ctValCcy']}, expected {base}")
        kind = "perpetual" if itype == "SWAP" else "future"
        expiry = int(r["expTime"]) if kind == "future" else None
        out.append(Instrument("okx", r["instId"], base, quote.upper(), kind, expiry, value, inverse))
    return out


def refresh_okx(out: Path | None = None) -> Path:
    pages = [fetch_json(u) for u in OKX_URLS]
    return write_instrument_file("okx", convert_okx(pages), " ".join(OKX_URLS), _now_iso(), out)


# --- Bybit v5 -------------------------------------------------------------------------------

BYBIT_URL = "https://api.bybit.com/v5/market/instruments-info?category={category}&limit=1000"
#: Bybit inverse contracts are worth 1 USD each.
BYBIT_INVERSE_CONTRACT_USD = 1.0


def convert_bybit(payload: dict | Iterable[dict]) -> list[Instrument]:
    """``/v5/market/instruments-info`` response(s) (category linear / inverse) -> instruments.

    ``contractType``: LinearPerpetual / LinearFutures (quantities in base coin)
    and InversePerpetual / InverseFutures (quantities in USD contracts of 1 USD).
    Futures expire at ``deliveryTime``; for perpetuals that field is "0" or a
    delisting time and is not an expiry.
    """
    pages = [payload] if isinstance(payload, dict) else list(payload)
    out = []
    for page in pages:
        if int(page.get("retCode", 0)) != 0:
            raise ValueError(f"Bybit instruments error {page.get('retCode')}: {page.get('retMsg')}")
        for r in page["result"]["list"]:
            ctype = r.get("contractType", "")
            if ctype not in ("LinearPerpetual", "LinearFutures", "InversePerpetual", "InverseFutures"):
                continue
            inverse = ctype.startswith("Inverse")
            kind = "perpetual" if ctype.endswith("Perpetual") else "future"
            expiry = int(r["deliveryTime"]) if kind == "future" and int(r.get("deliveryTime") or 0) else None
            out.append(Instrument("bybit", r["symbol"], normalize_asset(r["baseCoin"]), r["quoteCoin"].upper(), kind,
                                  expiry, BYBIT_INVERSE_CONTRACT_USD if inverse else 1.0, inverse))
    return out


def refresh_bybit(out: Path | None = None) -> Path:
    urls = [BYBIT_URL.format(category=c) for c in ("linear", "inverse")]
    pages = []
    for url in urls:
        cursor = ""
        while True:  # linear has more than one page of instruments
            page = fetch_json(url + (f"&cursor={cursor}" if cursor else ""))
            pages.append(page)
            cursor = page.get("result", {}).get("nextPageCursor") or ""
            if not cursor:
                break
    return write_instrument_file("bybit", convert_bybit(pages), " ".join(urls), _now_iso(), out)


# --- Hyperliquid ---------------------------------------------------------------------------

HYPERLIQUID_INFO_URL = "https://api.hyperliquid.xyz/info"


def _post_json(url: str, body: dict, timeout: float = HTTP_TIMEOUT_S) -> Any:
    """POST a JSON body (Hyperliquid's info endpoint takes ``{"type": ...}`` requests)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
        return json.loads(resp.read())


def convert_hyperliquid(payload: dict) -> list[Instrument]:
    """``{"meta": <info meta>, "spotMeta": <info spotMeta>}`` -> perpetuals (USDC) and spot pairs."""
    from connectors.exchanges.hyperliquid import instruments_from_meta

    return instruments_from_meta(payload.get("meta"), payload.get("spotMeta"))


def refresh_hyperliquid(out: Path | None = None) -> Path:
    payload = {"meta": _post_json(HYPERLIQUID_INFO_URL, {"type": "meta"}),
               "spotMeta": _post_json(HYPERLIQUID_INFO_URL, {"type": "spotMeta"})}
    return write_instrument_file("hyperliquid", convert_hyperliquid(payload),
                                 f"{HYPERLIQUID_INFO_URL} meta+spotMeta", _now_iso(), out)


# --- Deribit --------------------------------------------------------------------------------

DERIBIT_URLS = tuple(f"https://www.deribit.com/api/v2/public/get_instruments?currency={c}&expired=false"
                     for c in ("BTC", "ETH", "USDC", "USDT"))


def convert_deribit(payload: dict | list[dict]) -> list[Instrument]:
    """``public/get_instruments`` response(s) -> instruments (contract value 1: see deribit.py)."""
    from connectors.exchanges.deribit import instruments_from_get_instruments

    return instruments_from_get_instruments(payload)


def refresh_deribit(out: Path | None = None) -> Path:
    pages = [fetch_json(u) for u in DERIBIT_URLS]
    return write_instrument_file("deribit", convert_deribit(pages), " ".join(DERIBIT_URLS), _now_iso(), out)


# --- registry -------------------------------------------------------------------------------

REFRESHERS: dict[str, Callable[[Path | None], Path]] = {
    "binance-delivery": refresh_binance_delivery,
    "bybit": refresh_bybit,
    "okx": refresh_okx,
    "hyperliquid": refresh_hyperliquid,
    "deribit": refresh_deribit,
}


def refresh(venue: str, out: Path | None = None) -> Path:
    """Fetch ``venue``'s instrument endpoint and rewrite its metadata file (or ``out``)."""
    try:
        refresher = REFRESHERS[venue]
    except KeyError:
        raise KeyError(f"no instrument refresher for {venue!r}; known: {', '.join(sorted(REFRESHERS))}") from None
    return refresher(out)
