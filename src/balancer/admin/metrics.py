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
    def backend_rows(self, servers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]: ...
    def response_histograms(self) -> dict[str, tuple[list[int], int]]: ...
    def bgp_status(self) -> dict[str, Any]: ...
    def l4_rows(self) -> list[dict[str, Any]]: ...
    def l4_update_seconds(self) -> float: ...
    def dns_status(self) -> dict[str, Any]: ...
    def vrrp_status(self) -> dict[str, Any]: ...
    def peers_status(self) -> dict[str, Any]: ...


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
        denied = CounterMetricFamily(
            "balancer_frontend_requests_denied", "HTTP requests refused by a deny rule.", labels=["frontend"]
        )
        rate_limited = CounterMetricFamily(
            "balancer_frontend_rate_limited",
            "HTTP requests (TCP mode: connections) over the frontend's rate_limit: 429 or tarpit.",
            labels=["frontend"],
        )
        conn_limited = CounterMetricFamily(
            "balancer_frontend_conn_limited",
            "Client connections refused at accept by the frontend's conn_limit.",
            labels=["frontend"],
        )
        bytes_in = CounterMetricFamily(
            "balancer_frontend_bytes_in", "Bytes received from clients.", labels=["frontend"]
        )
        bytes_out = CounterMetricFamily("balancer_frontend_bytes_out", "Bytes sent to clients.", labels=["frontend"])
        tls_handshakes = CounterMetricFamily(
            "balancer_frontend_tls_handshakes", "TLS handshakes completed with clients.", labels=["frontend"]
        )
        tls_resumed = CounterMetricFamily(
            "balancer_frontend_tls_resumed",
            "TLS handshakes that resumed a session (a ticket, or the shared session cache).",
            labels=["frontend"],
        )
        responses = CounterMetricFamily(
            "balancer_frontend_http_responses",
            "HTTP responses sent to clients, by status class (1xx..5xx, other).",
            labels=["frontend", "code"],
        )
        for row in frontends:
            name = row["frontend"]
            connections.add_metric([name], row["connections"])
            requests.add_metric([name], row["requests"])
            denied.add_metric([name], row["denied"])
            rate_limited.add_metric([name], row["rate_limited"])
            conn_limited.add_metric([name], row["conn_limited"])
            bytes_in.add_metric([name], row["bytes_in"])
            bytes_out.add_metric([name], row["bytes_out"])
            tls_handshakes.add_metric([name], row["tls_handshakes"])
            tls_resumed.add_metric([name], row["tls_resumed"])
            for code, count in row["responses"].items():
                responses.add_metric([name, code], count)
        yield from (connections, requests, denied, rate_limited, conn_limited, bytes_in, bytes_out)
        yield from (tls_handshakes, tls_resumed, responses)

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
        up = GaugeMetricFamily(
            "balancer_server_up",
            "1 while health checks pass and the server is not in maintenance, else 0.",
            labels=["backend", "server"],
        )
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
            up.add_metric(
                [row["backend"], row["server"]], 1.0 if row["health"] == "up" and row["state"] != "maint" else 0.0
            )
            for state in ("ready", "drain", "maint", "down"):
                current = "down" if row["health"] == "down" and row["state"] == "ready" else row["state"]
                status.add_metric([row["backend"], row["server"], state], 1.0 if current == state else 0.0)
            response.add_metric([row["backend"], row["server"]], row["resp_time_ms"] / 1000)
            backend_requests[row["backend"]] = backend_requests.get(row["backend"], 0) + row["requests"]
        yield up
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
        backend_http = CounterMetricFamily(
            "balancer_backend_http_requests", "HTTP requests routed to the backend.", labels=["backend"]
        )
        backend_responses = CounterMetricFamily(
            "balancer_backend_http_responses",
            "HTTP responses to requests of the backend, by status class (1xx..5xx, other).",
            labels=["backend", "code"],
        )
        queue = GaugeMetricFamily(
            "balancer_backend_queue_current", "Requests waiting for a server slot (maxconn).", labels=["backend"]
        )
        errors = CounterMetricFamily(
            "balancer_backend_errors",
            "Failed exchanges with the backend's servers, by cause (connect_refused, connect_timeout, "
            "connect_error, response_broken, response_timeout).",
            labels=["backend", "cause"],
        )
        for row in self.totals.backend_rows(servers):
            name = row["backend"]
            queue.add_metric([name], row["queued"])
            for cause, count in row["errors_by_cause"].items():
                errors.add_metric([name, cause], count)
            if row["mode"] != "http":
                continue
            backend_http.add_metric([name], row["requests"])
            for code, count in row["responses"].items():
                backend_responses.add_metric([name, code], count)
        yield from (backend_http, backend_responses, queue, errors)
        yield from self._bgp()
        yield from self._l4()
        yield from self._dns()
        yield from self._vrrp()
        yield from self._peers()

    def _peers(self) -> Iterator[Metric]:
        """[peers]: one series per other node (nothing without [peers])."""
        status = self.totals.peers_status()
        if status.get("bind") is None:
            return
        up = GaugeMetricFamily(
            "balancer_peers_link_up", "1 while this node's link to the peer node is up (sending).", labels=["node"]
        )
        inbound = GaugeMetricFamily(
            "balancer_peers_inbound_up", "1 while the peer node's link to this node is up (receiving).", labels=["node"]
        )
        sent = CounterMetricFamily(
            "balancer_peers_entries_sent",
            "Stick entries sent to the peer node (full copies included).",
            labels=["node"],
        )
        received = CounterMetricFamily(
            "balancer_peers_entries_received", "Stick entries received from the peer node.", labels=["node"]
        )
        for row in status["nodes"]:
            up.add_metric([row["address"]], 1 if row["state"] == "up" else 0)
            inbound.add_metric([row["address"]], 1 if row["inbound"] else 0)
            sent.add_metric([row["address"]], row["sent"])
            received.add_metric([row["address"]], row["received"])
        yield from (up, inbound, sent, received)

    def _vrrp(self) -> Iterator[Metric]:
        """[vrrp]: this node's role (nothing without [vrrp])."""
        status = self.totals.vrrp_status()
        if status.get("keepalived") is None:
            return
        master = GaugeMetricFamily("balancer_vrrp_master", "1 while this node is the VRRP master (holds the VIPs).")
        master.add_metric([], 1 if status["state"] == "MASTER" else 0)
        held = GaugeMetricFamily("balancer_vrrp_vips_held", "VIPs of [vrrp] on this node now.")
        held.add_metric([], len(status["held"]))
        transitions = CounterMetricFamily(
            "balancer_vrrp_transitions", "VRRP role changes of this node (MASTER, BACKUP, FAULT) since the start."
        )
        transitions.add_metric([], status["transitions"])
        restarts = CounterMetricFamily(
            "balancer_vrrp_keepalived_restarts", "Times keepalived died and was started again by balancer."
        )
        restarts.add_metric([], status["keepalived"]["restarts"])
        yield from (master, held, transitions, restarts)

    def _bgp(self) -> Iterator[Metric]:
        """[bgp]: one series per announced prefix and per neighbor (none without [bgp])."""
        status = self.totals.bgp_status()
        exabgp = status.get("exabgp")
        if exabgp is None:
            return
        announced = GaugeMetricFamily(
            "balancer_bgp_announced",
            "1 while this node announces the prefix to its BGP neighbors (SPEC's announce rule).",
            labels=["prefix"],
        )
        for row in status["announcements"]:
            announced.add_metric([row["prefix"]], 1 if row["announced"] else 0)
        session = GaugeMetricFamily(
            "balancer_bgp_session_up", "1 while the BGP session with the neighbor is established.", labels=["neighbor"]
        )
        for row in status["neighbors"]:
            session.add_metric([row["address"]], 1 if row["state"] == "established" else 0)
        restarts = CounterMetricFamily(
            "balancer_bgp_exabgp_restarts", "Times ExaBGP died and was started again by balancer."
        )
        restarts.add_metric([], exabgp["restarts"])
        yield from (announced, session, restarts)

    def _l4(self) -> Iterator[Metric]:
        """The [[l4]] tables of an L4 node (nothing when the file has none)."""
        rows = self.totals.l4_rows()
        if not rows:
            return
        up = GaugeMetricFamily(
            "balancer_l4_node_up",
            "1 while the L7 node takes new flows (check passing, not in maintenance), else 0.",
            labels=["l4", "node"],
        )
        slots = GaugeMetricFamily(
            "balancer_l4_slots",
            "Slots of the table's lookup map that send new flows to the node.",
            labels=["l4", "node"],
        )
        for row in rows:
            up.add_metric([row["l4"], row["node"]], 1.0 if row["state"] == "up" else 0.0)
            slots.add_metric([row["l4"], row["node"]], row["slots"])
        update = GaugeMetricFamily(
            "balancer_l4_table_update_seconds",
            "How long the last change of an [[l4]] table's usable nodes took, kernel update included.",
        )
        update.add_metric([], self.totals.l4_update_seconds())
        yield from (up, slots, update)

    def _dns(self) -> Iterator[Metric]:
        """[dns]: responses by rcode, and each record's answers up (none without [dns])."""
        status = self.totals.dns_status()
        if status.get("zone") is None:
            return
        responses = CounterMetricFamily(
            "balancer_dns_responses",
            "DNS queries answered, by response code (dropped: not answered, such as a datagram that is no query).",
            labels=["rcode"],
        )
        for rcode, count in sorted(status["queries"].items()):
            responses.add_metric([rcode], count)
        truncated = CounterMetricFamily(
            "balancer_dns_truncated", "UDP responses sent truncated (TC) because the answer did not fit."
        )
        truncated.add_metric([], status["truncated"])
        up = GaugeMetricFamily(
            "balancer_dns_answers_up", "Answers of the name whose check says up.", labels=["name", "type"]
        )
        total = GaugeMetricFamily("balancer_dns_answers", "Answers configured for the name.", labels=["name", "type"])
        for record in status["records"]:
            up.add_metric([record["name"], record["type"]], record["up"])
            total.add_metric([record["name"], record["type"]], len(record["answers"]))
        yield from (responses, truncated, up, total)


def render(totals: Totals) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(totals))
    return bytes(generate_latest(registry))
