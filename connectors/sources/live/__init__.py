"""Live venue feeds: websocket clients per venue, REST polls, and their counters.

* :mod:`.venues` - what each venue needs (URL, subscriptions, heartbeat)
* :mod:`.client` - the venue-agnostic reconnecting websocket client (:class:`LiveFeed`)
* :mod:`.poller` - REST polls for data not pushed on the socket (Binance open interest)

The recorder (:mod:`connectors.sources.recorder`) writes what these receive to a capture.
"""

from connectors.sources.live.client import ConnectionStats, LiveConfig, LiveFeed, backoff_delay
from connectors.sources.live.poller import RestPoller, open_interest_urls
from connectors.sources.live.venues import ALL_CHANNELS, SPECS, ConnectionPlan, Heartbeat, VenueSpec, spec_for

__all__ = [
    "ALL_CHANNELS",
    "SPECS",
    "ConnectionPlan",
    "ConnectionStats",
    "Heartbeat",
    "LiveConfig",
    "LiveFeed",
    "RestPoller",
    "VenueSpec",
    "backoff_delay",
    "open_interest_urls",
    "spec_for",
]
