"""The node's counters and their Prometheus exposition (``/metrics`` on the web port).

The hot path only adds to plain integers (:class:`NodeStats`): no lock and no call per
delivery (deliveries are added once per message, by the member count). prometheus-client
reads them when scraped, through a collector registered in a registry of the node's own,
so several nodes in one process never mix their figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: The ``Content-Type`` of :func:`exposition`'s bytes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeStats:
    """Counts kept by the parts of a node; only ever incremented."""

    __slots__ = (
        "deliveries",
        "joins",
        "leaves",
        "loop_lag",
        "messages_received",
        "rate_limited",
        "slow_consumers_dropped",
    )

    def __init__(self) -> None:
        self.joins = 0
        self.leaves = 0
        #: Chat messages this node accepted from its clients or server code (``say``s).
        self.messages_received = 0
        #: Chat messages written to local members (a message to 100 members counts 100).
        self.deliveries = 0
        self.slow_consumers_dropped = 0
        self.rate_limited = 0
        #: The largest event-loop lag seen in the last sampling interval, in seconds.
        self.loop_lag = 0.0


class NodeCollector(Collector):
    """Turns a node's figures into Prometheus metrics at scrape time."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def collect(self) -> Iterator[Metric]:
        api = self._api
        stats: NodeStats = api.stats
        counters: list[tuple[str, str, float]] = [
            ("roomcast_joins", "room joins by this node's connections", stats.joins),
            ("roomcast_leaves", "room leaves by this node's connections", stats.leaves),
            (
                "roomcast_messages_received",
                "chat messages said on this node",
                stats.messages_received,
            ),
            (
                "roomcast_deliveries",
                "chat messages written to this node's members",
                stats.deliveries,
            ),
            (
                "roomcast_slow_consumers_dropped",
                "clients dropped for not reading",
                stats.slow_consumers_dropped,
            ),
            ("roomcast_rate_limited", "requests refused by a rate limit", stats.rate_limited),
            ("roomcast_rpc_calls", "RPC calls this node made", api.cluster.rpc.calls),
            ("roomcast_rpc_timeouts", "RPC calls that timed out", api.cluster.rpc.timeouts),
            (
                "roomcast_redis_reconnects",
                "pub/sub reconnections to Redis",
                api.cluster.bus.reconnects,
            ),
        ]
        for name, text, value in counters:
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        by_transport = GaugeMetricFamily(
            "roomcast_connections", "open connections by transport", labels=["transport"]
        )
        for transport, count in sorted(api.connections.by_type().items()):
            by_transport.add_metric([transport], count)
        yield by_transport
        yield GaugeMetricFamily(
            "roomcast_rooms_local",
            "rooms with at least one member on this node",
            value=len(api.chat_room.index),
        )
        yield GaugeMetricFamily(
            "roomcast_event_loop_lag_seconds",
            "largest event-loop delay seen in the last sampling interval",
            value=stats.loop_lag,
        )


def registry_for(api: Any) -> CollectorRegistry:
    """A registry of the node's own holding its collector."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(api))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


async def watch_loop_lag(
    record: Callable[[float], None], interval: float = 0.5, window: int = 10
) -> None:
    """Sample how late the loop wakes a sleeper, forever; ``record`` the worst lag of the
    current window of ``window`` samples after each one (a stall stays visible a while)."""
    worst = 0.0
    samples = 0
    while True:
        start = time.perf_counter()
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - start - interval)
        if samples >= window:
            worst, samples = 0.0, 0
        worst = max(worst, lag)
        samples += 1
        record(worst)
