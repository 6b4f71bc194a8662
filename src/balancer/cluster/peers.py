"""`[peers]`: the master replicates its node's stick tables to the other nodes of a pair.

The wire format is proto/peers.py. Here the master runs one listener (`bind`) that applies
what other nodes send, and one outbound link per node of `nodes` that sends this node's
entries: after each (re)connect a full copy (RESYNC ... SYNCED), then every change as it
happens (the local store is drained every `PUSH_INTERVAL`, a few tens of milliseconds).
A link that falls behind by more than MAX_BACKLOG updates drops its backlog and sends a
full copy again instead: the newest state is what matters, not every step to it.

Entries applied from a peer are written into the local tables without being sent on (the
store reports only changes the workers made), so two nodes never echo each other. A link
that fails is retried with cluster/child's doubling pause; every change of a link's state
is one log line. Both ends send HEARTBEAT when idle and close a link silent for three
heartbeats (a handshake too), so a cut cable is noticed without waiting for TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from balancer.cluster.child import Backoff, pause
from balancer.config.model import Peers
from balancer.config.values import Address
from balancer.proto import peers as wire

log = logging.getLogger("balancer.cluster")

PUSH_INTERVAL = 0.02  # how often local changes are collected and sent
MAX_BACKLOG = 100_000  # updates queued for one link before it resends a full copy instead
CONNECT_TIMEOUT = 3.0
SILENT_HEARTBEATS = 3  # a link silent this many heartbeats is dead
STOP_TIMEOUT = 2.0  # the longest a stop waits for the links' tasks to end


class StickStore(Protocol):
    """The node's stick tables as [peers] sees them."""

    def snapshot(self) -> Iterable[wire.StickUpdate]:
        """Every live entry of every table, with the time each has left."""
        ...

    def apply(self, update: wire.StickUpdate) -> None:
        """An entry from a peer: write it (an unknown table or server is ignored)."""
        ...

    def take_changes(self) -> tuple[list[wire.StickUpdate], bool]:
        """The entries the workers wrote since the last call (not those `apply` wrote), and
        whether some changes were lost (then every link sends a full copy)."""
        ...


class _Link:
    """The outbound link to one node: its state, its backlog, its counters."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.state = "connecting"  # connecting, syncing, up, failed
        self.error = ""
        self.since = time.time()
        self.sent = 0
        self.backlog: list[wire.StickUpdate] = []
        self.resync = False  # the backlog overflowed: send a full copy
        self.ready = asyncio.Event()  # the backlog has something, or a resync is due
        self.wake = asyncio.Event()  # stop waiting for the next attempt
        self.task: asyncio.Task[None] | None = None

    def set_state(self, state: str, error: str = "") -> None:
        if (state, error) != (self.state, self.error):
            self.state, self.error, self.since = state, error, time.time()
            if state == "failed":
                log.warning("peers: link to %s failed: %s", self.address, error)
            elif state == "up":
                log.info("peers: link to %s is up", self.address)

    def queue(self, changes: list[wire.StickUpdate]) -> None:
        if self.state != "up" or self.resync:
            return  # a (re)connect sends a full copy anyway
        self.backlog.extend(changes)
        if len(self.backlog) > MAX_BACKLOG:
            self.backlog.clear()
            self.resync = True
        self.ready.set()


class PeersService:
    """Run by the master while the file has `[peers]`; `store` is the node's stick tables."""

    def __init__(self, config: Peers, store: StickStore) -> None:
        self.config = config
        self.store = store
        self.key = config.key.encode()
        self.links: dict[Address, _Link] = {}
        self.inbound: dict[str, dict[str, Any]] = {}  # dialer address -> its counters
        self._server: asyncio.AbstractServer | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # inbound links
        self.received = 0
        self.stopping = False

    @property
    def _silence(self) -> float:
        """How long a link (or a handshake) may stay silent before it is given up."""
        return self.config.heartbeat * SILENT_HEARTBEATS

    async def start(self) -> None:
        """Listen on `bind` (an OSError if it cannot) and start a link to every node."""
        bind = self.config.bind
        self._server = await asyncio.start_server(self._accept, bind.host or None, bind.port)
        self._pusher = asyncio.create_task(self._push())
        self._reconcile()
        log.info("peers: listening on %s, %d node(s)", bind, len(self.config.nodes))

    def reload(self, config: Peers) -> None:
        """New `nodes` or `key`; a new `bind` needs a restart of the master (said in docs)."""
        changed_key = config.key != self.config.key
        self.config = config
        self.key = config.key.encode()
        if changed_key:
            for link in list(self.links.values()):
                self._drop(link)
        self._reconcile()

    async def stop(self) -> None:
        """End every link and stop listening; returns within STOP_TIMEOUT even if a task
        does not end (a stop must never hang on replication)."""
        # The flag and closed sockets, not only cancel(): Python 3.11's wait_for swallows a
        # cancellation that arrives as the awaited read or connect completes, and the task
        # would go on (an inbound link the other node keeps feeding heartbeats, a link
        # retrying a node forever). Inbound handlers end on their closed socket rather than
        # by cancellation, which asyncio's stream server would log as an error.
        self.stopping = True
        for link in self.links.values():
            link.wake.set()
        if self._server is not None:
            self._server.close()
        for writer in self._handlers.values():
            writer.close()
        tasks = [link.task for link in self.links.values() if link.task is not None]
        if self._pusher is not None:
            tasks.append(self._pusher)
        for task in tasks:
            task.cancel()
        tasks += list(self._handlers)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in done:  # retrieved, so that asyncio does not log them as lost
                if not task.cancelled():
                    task.exception()
            if pending:
                log.warning("peers: %d task(s) did not end within %gs of the stop", len(pending), STOP_TIMEOUT)
        self.links.clear()

    def status(self) -> dict[str, Any]:
        return {
            "bind": str(self.config.bind),
            "received": self.received,
            "nodes": [
                {
                    "address": str(link.address),
                    "state": link.state,
                    "error": link.error,
                    "since": link.since,
                    "sent": link.sent,
                    "backlog": len(link.backlog),
                    "inbound": str(link.address) in self.inbound,
                    "received": self.inbound.get(str(link.address), {}).get("received", 0),
                }
                for link in self.links.values()
            ],
        }

    # -- outbound ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        wanted = set(self.config.nodes)
        for address in list(self.links):
            if address not in wanted:
                self._drop(self.links.pop(address))
        for address in self.config.nodes:
            if address not in self.links:
                link = _Link(address)
                link.task = asyncio.create_task(self._run_link(link))
                self.links[address] = link

    def _drop(self, link: _Link) -> None:
        self.links.pop(link.address, None)  # its loop ends when it sees this
        link.wake.set()
        if link.task is not None:
            link.task.cancel()

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL)
            self.push_now()

    def push_now(self) -> None:
        """Collect the local changes and queue them on every link (a full copy instead
        when some were lost)."""
        try:
            changes, lost = self.store.take_changes()
        except Exception:  # a broken store must not end replication for good
            log.exception("peers: reading the local changes failed")
            return
        for link in self.links.values():
            if lost:
                link.backlog.clear()
                link.resync = True
                link.ready.set()
            elif changes:
                link.queue(changes)

    async def _run_link(self, link: _Link) -> None:
        backoff = Backoff()
        while not self.stopping and self.links.get(link.address) is link:
            started = time.monotonic()
            try:
                await self._connect_and_send(link, backoff)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, wire.PeerProtocolError, ConnectionError) as exc:
                link.set_state("failed", str(exc) or type(exc).__name__)
            except Exception as exc:  # never let one link's bug end it silently
                log.exception("peers: link to %s", link.address)
                link.set_state("failed", repr(exc))
            link.backlog.clear()
            await pause(link.wake, backoff.died(time.monotonic() - started))

    async def _connect_and_send(self, link: _Link, backoff: Backoff) -> None:
        address = link.address
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), CONNECT_TIMEOUT)
        try:
            decoder = wire.FrameDecoder()
            await asyncio.wait_for(self._dial_handshake(reader, writer, decoder), self._silence)
            link.set_state("syncing")
            backoff.reset()  # it got in: a later failure is a new story, retried quickly
            listener = asyncio.create_task(self._read_heartbeats(reader, decoder))
            try:
                await self._send_loop(link, writer, listener)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listener
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dial_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: wire.FrameDecoder
    ) -> None:
        me = str(self.config.bind)
        nonce = os.urandom(wire.NONCE_SIZE)
        writer.write(wire.hello(me, nonce))
        kind, payload = await _next_frame(reader, decoder)
        if kind == wire.REFUSED:
            raise wire.PeerProtocolError(f"refused: {payload.decode(errors='replace')}")
        if kind != wire.CHALLENGE:
            raise wire.PeerProtocolError(f"expected CHALLENGE, got frame type {kind}")
        theirs = wire.parse_nonce(payload)
        writer.write(wire.frame(wire.AUTH, wire.dial_proof(self.key, theirs, nonce, me)))
        kind, payload = await _next_frame(reader, decoder)
        if kind == wire.REFUSED:
            raise wire.PeerProtocolError(f"refused: {payload.decode(errors='replace')}")
        if kind != wire.WELCOME or not hmac.compare_digest(
            wire.parse_proof(payload), wire.accept_proof(self.key, nonce, theirs)
        ):
            raise wire.PeerProtocolError("the node did not prove it knows the key (a different key?)")

    async def _send_loop(self, link: _Link, writer: asyncio.StreamWriter, listener: asyncio.Task[None]) -> None:
        heartbeat = self.config.heartbeat
        link.resync = True
        while not self.stopping and self.links.get(link.address) is link:
            if link.resync:
                # Queue changes from now on, then copy everything: nothing falls between.
                link.resync = False
                link.backlog.clear()
                link.state = "up"  # so queue() accepts; set_state below logs it
                entries = list(self.store.snapshot())
                writer.write(wire.frame(wire.RESYNC))
                for entry in entries:
                    writer.write(wire.update(entry))
                writer.write(wire.frame(wire.SYNCED))
                link.sent += len(entries)
                await writer.drain()
                link.state = "syncing"
                link.set_state("up")
                log.info("peers: sent a full copy to %s (%d entries)", link.address, len(entries))
            if link.backlog:
                batch, link.backlog = link.backlog, []
                writer.write(b"".join(wire.update(entry) for entry in batch))
                link.sent += len(batch)
                await writer.drain()
                continue
            link.ready.clear()
            waiter = asyncio.ensure_future(link.ready.wait())
            done, _ = await asyncio.wait({waiter, listener}, timeout=heartbeat, return_when=asyncio.FIRST_COMPLETED)
            if listener in done:
                waiter.cancel()
                listener.result()  # raises what ended it
                raise ConnectionError("the node closed the link")
            if not done:
                waiter.cancel()
                writer.write(wire.frame(wire.HEARTBEAT))
                await writer.drain()

    async def _read_heartbeats(self, reader: asyncio.StreamReader, decoder: wire.FrameDecoder) -> None:
        """The acceptor only sends heartbeats; silence for SILENT_HEARTBEATS ends the link."""
        while True:
            kind, _ = await _next_frame(reader, decoder, self._silence)
            if kind != wire.HEARTBEAT:
                raise wire.PeerProtocolError(f"unexpected frame type {kind} from an acceptor")

    # -- inbound -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            decoder = wire.FrameDecoder()
            name = await asyncio.wait_for(self._accept_handshake(reader, writer, decoder, name), self._silence)
            await self._receive(reader, writer, decoder, name)
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError, wire.PeerProtocolError, ConnectionError) as exc:
            if not self.stopping:  # closed by our own stop otherwise
                log.warning("peers: link from %s ended: %s", name, str(exc) or type(exc).__name__)
        except Exception:
            log.exception("peers: link from %s", name)
        finally:
            self.inbound.pop(name, None)
            self._handlers.pop(task, None)
            writer.close()

    async def _accept_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: wire.FrameDecoder, name: str
    ) -> str:
        kind, payload = await _next_frame(reader, decoder)
        if kind != wire.HELLO:
            raise wire.PeerProtocolError(f"expected HELLO, got frame type {kind}")
        address, theirs = wire.parse_hello(payload)
        if address not in {str(node) for node in self.config.nodes}:
            writer.write(wire.frame(wire.REFUSED, f"{address} is not one of this node's [peers] nodes".encode()))
            raise wire.PeerProtocolError(f"{name} said it is {address}, not one of [peers] nodes")
        nonce = os.urandom(wire.NONCE_SIZE)
        writer.write(wire.challenge(nonce))
        kind, payload = await _next_frame(reader, decoder)
        if kind != wire.AUTH or not hmac.compare_digest(
            wire.parse_proof(payload), wire.dial_proof(self.key, nonce, theirs, address)
        ):
            writer.write(wire.frame(wire.REFUSED, b"authentication failed"))
            raise wire.PeerProtocolError(f"{address} ({name}) failed authentication (a different key?)")
        writer.write(wire.frame(wire.WELCOME, wire.accept_proof(self.key, theirs, nonce)))
        return address

    async def _receive(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: wire.FrameDecoder, name: str
    ) -> None:
        counters: dict[str, Any] = {"received": 0, "since": time.time()}
        self.inbound[name] = counters
        beating = asyncio.create_task(_beat(writer, self.config.heartbeat))
        in_copy = -1  # entries of the full copy being received; -1: none is
        try:
            while not self.stopping:
                kind, payload = await _next_frame(reader, decoder, self._silence)
                if kind == wire.UPDATE:
                    self.store.apply(wire.parse_update(payload))
                    counters["received"] += 1
                    self.received += 1
                    if in_copy >= 0:
                        in_copy += 1
                elif kind == wire.RESYNC:
                    in_copy = 0
                elif kind == wire.SYNCED:
                    log.info("peers: received a full copy from %s (%d entries)", name, max(in_copy, 0))
                    in_copy = -1
                elif kind != wire.HEARTBEAT:
                    raise wire.PeerProtocolError(f"unexpected frame type {kind} from a dialer")
        finally:
            beating.cancel()


async def _beat(writer: asyncio.StreamWriter, interval: float) -> None:
    """The acceptor's side of the heartbeat: it has nothing else to say."""
    while True:
        await asyncio.sleep(interval)
        writer.write(wire.frame(wire.HEARTBEAT))


async def _next_frame(reader: asyncio.StreamReader, decoder: wire.FrameDecoder, timeout: float = 60.0) -> wire.Frame:
    """The next frame, reading as needed; a TimeoutError after `timeout` seconds of silence."""
    while True:
        frame = decoder.next()
        if frame is not None:
            return frame
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            raise ConnectionError("closed by the node")
        decoder.feed(data)
