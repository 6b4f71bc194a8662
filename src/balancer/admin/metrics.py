"""Prometheus exposition of the master's totals (prometheus-client's text format).

Names follow HAProxy's exporter where one exists (frontend/backend/server labels,
`_total` counters), so dashboards built for HAProxy need few changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.runtime.state import RESPONSE_BUCKETS_MS


class Totals(Protocol):
    def servers(self) -> list[dict[str, Any]]: ...
    def frontend_rows(self) -> list[dict[str, Any]]: ...
    def response_histograms(self) -> dict[str, tuple[list[int], int]]: ...


class BalancerCollector(Collector):
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        frontends = self.totals.frontend_rows()
        connections = CounterMetricFamily(
            "balancer_frontend_connections", "Client connections accepted.", labels=["frontend"]
        )
        requests = CounterMetricFamily(
            "balancer_frontend_http_requests", "HTTP requests received.", labels=["frontend"]
        )
        for row in frontends:
            connections.add_metric([row["frontend"]], row["connections"])
            requests.add_metric([row["frontend"]], row["requests"])
        yield connections
        yield requests

        servers = self.totals.servers()
        per_server: dict[str, tuple[type[CounterMetricFamily] | type[GaugeMetricFamily], str, str]] = {
            "requests": (
                CounterMetricFamily,
                "balancer_server_sessions",
                "Requests or connections sent to the server.",
            ),
            "bytes_in": (CounterMetricFamily, "balancer_server_bytes_in", "Bytes sent to the server by clients."),
            "bytes_out": (CounterMetricFamily, "balancer_server_bytes_out", "Bytes sent to clients by the server."),
            "errors": (CounterMetricFamily, "balancer_server_errors", "Failed exchanges with the server."),
            "connect_failures": (
                CounterMetricFamily,
                "balancer_server_connection_errors",
                "Failed connection attempts.",
            ),
            "active": (GaugeMetricFamily, "balancer_server_current_sessions", "Exchanges in flight."),
            "weight": (GaugeMetricFamily, "balancer_server_weight", "Weight set in the config or by the operator."),
        }
        for field, (kind, name, text) in per_server.items():
            family = kind(name, text, labels=["backend", "server"])
            for row in servers:
                family.add_metric([row["backend"], row["server"]], row[field])
            yield family
        status = GaugeMetricFamily(
            "balancer_server_status", "1 for the server's current state.", labels=["backend", "server", "state"]
        )
        response = GaugeMetricFamily(
            "balancer_server_response_time_average_seconds",
            "Average response time.",
            labels=["backend", "server"],
        )
        backend_requests: dict[str, int] = {}
        for row in servers:
            for state in ("ready", "drain", "maint", "down"):
                current = "down" if row["health"] == "down" and row["state"] == "ready" else row["state"]
                status.add_metric([row["backend"], row["server"], state], 1.0 if current == state else 0.0)
            response.add_metric([row["backend"], row["server"]], row["resp_time_ms"] / 1000)
            backend_requests[row["backend"]] = backend_requests.get(row["backend"], 0) + row["requests"]
        yield status
        yield response
        histogram = HistogramMetricFamily(
            "balancer_backend_response_time_seconds",
            "Time from request sent to response head received, per backend.",
            labels=["backend"],
        )
        for name, rows in self.totals.response_histograms().items():
            buckets, total_ms = rows
            cumulative = 0
            points: list[tuple[str, float]] = []
            for bound, count in zip((*RESPONSE_BUCKETS_MS, None), buckets, strict=True):
                cumulative += count
                points.append(("+Inf" if bound is None else repr(bound / 1000), cumulative))
            histogram.add_metric([name], points, sum_value=total_ms / 1000)
        yield histogram
        backend = CounterMetricFamily("balancer_backend_sessions", "Requests sent to the backend.", labels=["backend"])
        for name, value in backend_requests.items():
            backend.add_metric([name], value)
        yield backend


def render(totals: Totals) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(totals))
    return bytes(generate_latest(registry))
