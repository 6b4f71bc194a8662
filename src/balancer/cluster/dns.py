"""[dns]: the master's authoritative DNS server, over UDP and TCP, and its answers' checks.

Design. What to answer is decided by `cluster.dns_answer.Responder` (no I/O); this module
owns the sockets, the checks and the counters. Each `bind` address gets a UDP socket and
a TCP listener on the same port (a port 0 is chosen by the TCP bind, then taken for UDP
too). TCP carries length-prefixed messages (RFC 1035 4.2.2, RFC 7766): several queries per
connection, answered in order; a connection idle for `tcp_idle_timeout` is closed, and so
is one whose reader lets more than WRITE_LIMIT bytes of answers pile up.

Each answer with a `check` is probed by the checks/ probes (tcp or http, on the answer's
address and `check.port`) with the rise/fall HealthTracker, exactly as a backend's servers
are: it starts up, goes down after `fall` failures, back up after `rise` successes; every
flip is one event-log line. A reload keeps the health of an answer whose record, address
and check are unchanged, swaps the responder in whole, and re-binds only when `bind`
changed (the sockets of addresses still wanted stay open: no query is lost).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import Counter
from typing import Any, cast

from balancer.checks.health import HealthTracker
from balancer.checks.probes import http_check, tcp_check
from balancer.cluster.dns_answer import AnswerKey, Responder
from balancer.config.model import Config, Dns, DnsCheck
from balancer.config.values import Address

log = logging.getLogger("balancer.dns")

WRITE_LIMIT = 1 << 20  # bytes of answers a TCP client may leave unread before it is dropped
MAX_TCP_MESSAGE = 65535


class _Answer:
    """One checked answer: its tracker and what the last check said."""

    def __init__(self, key: AnswerKey, check: DnsCheck) -> None:
        self.key = key
        self.check = check
        self.tracker = HealthTracker(check.rise, check.fall, check.interval, check.fastinterval, check.downinterval)
        self.changed_at = time.time()


class DnsServer:
    """The [dns] server of the master. Call from the master's event loop only."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.config: Dns | None = None
        self.responder: Responder | None = None
        self.checked: dict[AnswerKey, _Answer] = {}
        self.tasks: list[asyncio.Task[None]] = []
        # Bumped when the checks stop: a loop of an earlier table ends at its next turn even
        # when it missed its cancellation (Python 3.11's wait_for drops one that arrives as
        # the awaited probe completes), instead of feeding a kept answer's tracker twice.
        self.epoch = 0
        self.endpoints: dict[str, tuple[asyncio.DatagramTransport, asyncio.Server]] = {}
        self.ports: dict[str, int] = {}  # bind as written -> the port bound (differs for port 0)
        self.counts: Counter[str] = Counter()  # responses by rcode; "dropped" for ignored datagrams
        self.truncated = 0

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, config: Config) -> None:
        """Bind every address and start the checks. Raises OSError when an address cannot be
        bound (nothing stays bound then)."""
        assert config.dns is not None
        await self._bind(config.dns)
        self._take(config.dns)
        log.info("dns: answering for %s on %s", config.dns.zone, ", ".join(self.addresses()))

    async def reload(self, config: Config) -> None:
        """Take a new [dns] table: re-bind only the addresses that changed. Raises OSError
        when a new address cannot be bound (the old table keeps serving)."""
        assert config.dns is not None
        old = self.config
        if old is None or [str(a) for a in old.bind] != [str(a) for a in config.dns.bind]:
            await self._bind(config.dns)
        self._take(config.dns)

    async def stop(self) -> None:
        self._stop_checks()
        for udp, tcp in self.endpoints.values():
            udp.close()
            tcp.close()
        self.endpoints.clear()
        self.ports.clear()
        log.info("dns: stopped")

    def addresses(self) -> list[str]:
        """Where the server listens, with the ports actually bound."""
        return [str(_with_port(key, port)) for key, port in self.ports.items()]

    # -- sockets ------------------------------------------------------------------------------

    async def _bind(self, dns: Dns) -> None:
        wanted = [str(address) for address in dns.bind]
        opened: dict[str, tuple[asyncio.DatagramTransport, asyncio.Server]] = {}
        ports: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        try:
            for address in dns.bind:
                key = str(address)
                if key in self.endpoints:
                    continue
                family = socket.AF_INET6 if address.family_is_ipv6 else socket.AF_INET
                host = address.host or "0.0.0.0"
                try:
                    tcp = await loop.create_server(
                        lambda: _TcpQueries(self), host, address.port, family=family, reuse_address=True
                    )
                except OSError as exc:
                    raise OSError(f"[dns] cannot bind {key} (tcp): {exc.strerror or exc}") from None
                port = int(tcp.sockets[0].getsockname()[1])
                try:
                    udp = await _udp_endpoint(loop, self, family, host, port)
                except OSError as exc:
                    tcp.close()
                    raise OSError(f"[dns] cannot bind {key} (udp): {exc.strerror or exc}") from None
                opened[key] = (udp, tcp)
                ports[key] = port
        except OSError:
            for udp, tcp in opened.values():
                udp.close()
                tcp.close()
            raise
        for key in [key for key in self.endpoints if key not in wanted]:
            udp, tcp = self.endpoints.pop(key)
            udp.close()
            tcp.close()
            self.ports.pop(key, None)
        self.endpoints.update(opened)
        self.ports.update(ports)

    # -- checks -------------------------------------------------------------------------------

    def _take(self, dns: Dns) -> None:
        self._stop_checks()
        checked: dict[AnswerKey, _Answer] = {}
        for record in dns.record:
            owner = dns.owner(record)
            for answer in record.answers:
                if answer.check is None:
                    continue
                key = (owner, record.type, answer.address)
                previous = self.checked.get(key)
                if previous is not None and previous.check == answer.check:
                    checked[key] = previous  # same target, same check: its health goes on
                else:
                    checked[key] = _Answer(key, answer.check)
        self.checked = checked
        self.config = dns
        self.responder = Responder(dns, self.healthy, self.rng)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._check_loop(answer)) for answer in checked.values()]

    def _stop_checks(self) -> None:
        self.epoch += 1
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    def healthy(self, key: AnswerKey) -> bool:
        """An answer is up unless its check says down; one without a check is always up."""
        answer = self.checked.get(key)
        return answer is None or answer.tracker.state == "up"

    async def _check_loop(self, answer: _Answer) -> None:
        check = answer.check
        target = Address(host=answer.key[2], port=check.port)
        first = True
        epoch = self.epoch
        while epoch == self.epoch:
            interval = answer.tracker.next_interval()
            await asyncio.sleep(interval * (self.rng.random() if first else self.rng.uniform(0.9, 1.1)))
            first = False
            if check.type == "http":
                ok, detail = await http_check(target, check, check.timeout)
            else:
                ok, detail = await tcp_check(target, check.timeout)
            if epoch != self.epoch:
                return
            transition = answer.tracker.record(ok, detail)
            if transition is None:
                continue
            answer.changed_at = time.time()
            owner, rdtype, address = answer.key
            up, total = self._up_in(owner, rdtype)
            verb = "failed" if transition.new == "down" else "succeeded"
            log.warning(
                "dns answer %s %s %s is %s (was %s): %s; %d consecutive checks %s (%s check every %gs);"
                " %d of %d answers up for %s %s%s",
                owner,
                rdtype,
                address,
                transition.new.upper(),
                transition.old,
                transition.reason,
                transition.checks,
                verb,
                check.type,
                check.interval,
                up,
                total,
                owner,
                rdtype,
                ": every answer is served (none is up)" if up == 0 else "",
            )

    def _up_in(self, owner: str, rdtype: str) -> tuple[int, int]:
        assert self.config is not None
        for record in self.config.record:
            if self.config.owner(record) == owner and record.type == rdtype:
                keys = [(owner, rdtype, answer.address) for answer in record.answers]
                return (sum(self.healthy(key) for key in keys), len(keys))
        return (0, 0)

    # -- queries ------------------------------------------------------------------------------

    def answer(self, wire: bytes, source: str, over_tcp: bool) -> bytes | None:
        responder = self.responder
        if responder is None:
            return None
        reply = responder.respond(wire, source, over_tcp)
        self.counts[reply.rcode] += 1
        if reply.truncated:
            self.truncated += 1
        return reply.wire

    def status(self) -> dict[str, Any]:
        """For `ctl show dns`, /api/dns and the metrics: each record's answers, their health,
        and whether each is served now."""
        dns = self.config
        if dns is None or self.responder is None:
            return {"zone": None, "bind": [], "records": [], "queries": {}, "truncated": 0}
        records = []
        for record in dns.record:
            owner = dns.owner(record)
            served = {answer.address for answer in self.responder.serving(owner, record.type)}
            answers = []
            for answer in record.answers:
                key = (owner, record.type, answer.address)
                checked = self.checked.get(key)
                answers.append(
                    {
                        "address": answer.address,
                        "site": answer.site,
                        "weight": answer.weight,
                        "health": "up" if self.healthy(key) else "down",
                        "check": checked.tracker.last_result if checked is not None else "none (always up)",
                        "since": round(time.time() - checked.changed_at, 1) if checked is not None else None,
                        "served": answer.address in served,
                    }
                )
            records.append(
                {
                    "name": owner,
                    "type": record.type,
                    "policy": record.policy,
                    "ttl": int(record.ttl if record.ttl is not None else dns.ttl),
                    "up": sum(1 for a in answers if a["health"] == "up"),
                    "answers": answers,
                }
            )
        return {
            "zone": dns.zone,
            "bind": self.addresses(),
            "records": records,
            "queries": dict(self.counts),
            "truncated": self.truncated,
        }


async def _udp_endpoint(
    loop: asyncio.AbstractEventLoop, server: DnsServer, family: int, host: str, port: int
) -> asyncio.DatagramTransport:
    """A UDP endpoint on a socket bound here, so a failure says why (errno), which uvloop's
    local_addr does not."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpQueries(server), sock=sock)
    return transport


def _with_port(written: str, port: int) -> Address:
    host, _, _ = written.rpartition(":")
    return Address(host=host.strip("[]"), port=port)


class _UdpQueries(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = self.server.answer(data, str(addr[0]), over_tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp: %s", exc)  # an ICMP error for an earlier reply: nothing to do


class _TcpQueries(asyncio.Protocol):
    """One TCP client: a 2-byte length, then the message; answered in order."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        self._rearm()

    def _rearm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        config = self.server.config
        timeout = config.tcp_idle_timeout if config is not None else 10.0
        self.idle = asyncio.get_running_loop().call_later(timeout, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._rearm()
        transport = self.transport
        assert transport is not None
        while len(self.buffer) >= 2:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + size:
                return
            message = bytes(self.buffer[2 : 2 + size])
            del self.buffer[: 2 + size]
            reply = self.server.answer(message, self.source, over_tcp=True)
            if reply is None:
                continue
            transport.write(len(reply).to_bytes(2, "big") + reply)
            if transport.get_write_buffer_size() > WRITE_LIMIT:
                transport.abort()  # a client that asks without reading
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.buffer.clear()
