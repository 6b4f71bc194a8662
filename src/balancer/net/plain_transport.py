"""Plain (cleartext) client connections on the socket itself, polled only when waiting.

The event loop's transports (uvloop's TCPTransport, like asyncio's) cost a new connection
four system calls it need not make: the local and the peer address are asked for at once
(getsockname, getpeername) though accept4 gave the peer's, and the socket is added to
epoll before the first read and taken out again at the close, though the client's request
may be there when the connection is accepted. HAProxy makes none of these: a request
answered with `Connection: close` costs it accept4, setsockopt, a read and a write on each
side, and the close. Measured with a bare relay (bench/floor_proxy.py and the same relay on
this transport, wrk with varied heads and `Connection: close`): 9-10 µs less kernel time per
connection, a sixth of what the connection costs.

`PlainAcceptor` accepts from a listening socket and gives each connection a
`PlainTransport`, which speaks the part of asyncio's Transport interface the sessions use
(the protocol may be a BufferedProtocol: the PROXY header reader is one):
- it reads at once, before asking the loop for anything; it registers for reading only
  when a read found nothing and the protocol wants more;
- `pause_reading` only notes the wish: the registration stays (level-triggered: a pause
  and a resume between two requests of a keep-alive connection cost no system call), and
  goes if the socket turns readable while paused. A protocol that wants no more bytes
  (the last request of a connection is read) pauses, and a connection that never waited
  is never registered;
- it writes at once too, and asks to be told writable only for what the kernel did not
  take (the flow control of the loop's transports: pause_writing above the high-water
  mark, resume_writing at the low one);
- `write_and_close` sends a last answer with its end of stream in one segment where it
  fits (the outbox uses it for a write and a close held back to back).

A connection is its descriptor: the calls are net.socket_calls', which never wait and say
"nothing now" as a value; no socket object is made (CPython makes one with a getsockname to
check the descriptor).

A connection that must wait for bytes, or for room to write, waits in the acceptor's Poller
(net.poller): one epoll_ctl to be watched and one to be dropped, where the loop's
`add_reader` costs four and up to two (libuv probes the descriptor, sets it non-blocking,
then adds it). Under load most connections wait for their first request: they are accepted
as the client's handshake completes, before its request arrives. An L4 relay's server
connections (net.plain_connect) are PlainTransports in the same Poller.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from balancer.net.acceptor import Acceptor
from balancer.net.linger import close_at_once, close_lingering
from balancer.net.poller import Poller
from balancer.net.socket_calls import getsockname, recv, recv_into, send, shutdown_write
from balancer.net.write_limits import TELL_LOST, WriteLimits

log = logging.getLogger(__name__)

# Bytes asked of one read: READ_SIZE, and RELAY_READ_SIZE once a read filled it. A request
# head fits the first many times over; a stream that fills it (an upload, an L4 relay's
# bulk transfer) moves in fewer, larger reads, as uvloop's 256 KiB, and a turn reads on
# while reads come back full, up to READS_PER_TURN, as libuv does: the socket drained in one
# wake-up rather than one read per loop pass (bench/tcp.py bulk, per proxy core: 64 KiB
# reads, one per pass, relayed a third less than uvloop's transports).
READ_SIZE: Final = 65536
RELAY_READ_SIZE: Final = 262144
READS_PER_TURN: Final = 16

# Bound once: `asyncio.BufferedProtocol` in a function looks the module's attribute up at
# each call (compiled too, ~200 instructions a connection).
BUFFERED_PROTOCOL: Final = asyncio.BufferedProtocol


class PlainAcceptor(Acceptor):
    """Serves each connection accepted from `sock` with a PlainTransport and a protocol
    from `make_protocol`."""

    def __init__(self, sock: socket.socket, make_protocol: Callable[[], asyncio.BaseProtocol]) -> None:
        super().__init__(sock)
        self.make_protocol = make_protocol
        # Every connection's local address when the listener's is not a wildcard one.
        name = sock.getsockname()
        self.sockname: Any = None if isinstance(name, tuple) and name[0] in ("0.0.0.0", "::") else name

    def accepted(self, fd: int, peer: Any) -> None:
        PlainTransport(self.loop, self.poller, fd, peer, self.sockname, self.make_protocol())


class PlainTransport(WriteLimits):
    """One connection: a transport (write, write_eof, close, abort, flow control both ways,
    extra info) for `protocol`, over descriptor `fd` (non-blocking, connected), which it
    owns and closes. The protocol is told connection_made at once, then the socket is read
    (`read_now`; else it waits in the poller first)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        poller: Poller,
        fd: int,
        peer: Any,
        sockname: Any,
        protocol: asyncio.BaseProtocol,
        read_now: bool = True,
    ) -> None:
        super().__init__(protocol)
        self.loop = loop
        self.poller = poller
        poller.attach()  # detached at _end
        self.fd = fd
        self.peer = peer
        self.sockname = sockname  # None: asked of the socket when first wanted
        self.buffered_protocol = isinstance(protocol, BUFFERED_PROTOCOL)
        self.open = True  # False once closed or aborted (what is queued may still go)
        self.ended = False  # the descriptor is closed (or given to net.linger)
        self.eof = False  # the client's end of stream was read
        self.reading_paused = False
        self.reading = False  # the reader callback is registered
        self.writing = False  # the writer callback is registered
        self.shut = False  # write_eof: shut down once what is queued is sent
        self.queued: list[bytes] = []
        self.read_size = READ_SIZE
        try:
            protocol.connection_made(self)  # type: ignore[arg-type]  # duck-typed Transport
        except Exception as exc:  # one connection's bug ends that connection only
            self._fatal(exc)
            return
        if read_now:
            self._read()  # a client's request is usually here already: no poll before
        elif self.open and not self.reading_paused:
            self._want_reading()

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        for _ in range(READS_PER_TURN):
            if not self._read_once():
                return

    def _read_once(self) -> bool:
        """One read, given to the protocol: True when it came back full and more is wanted."""
        if not self.open or self.eof:
            return False
        if self.reading_paused:
            if self.reading:  # readable while paused: stop being told until resumed
                self.reading = False
                self.poller.remove_reader(self.fd)
            return False
        protocol = self.protocol
        data: bytes | None = b""
        full = False  # the read took all it asked for: more may wait
        try:
            if self.buffered_protocol:
                size = recv_into(self.fd, protocol.get_buffer(-1))  # type: ignore[attr-defined]
            else:
                asked = self.read_size
                data = recv(self.fd, asked)
                size = None if data is None else len(data)
                if size == asked:
                    full = True
                    self.read_size = RELAY_READ_SIZE
        except Exception as exc:  # the socket's OSError, or get_buffer's bug
            self._fatal(exc)
            return False
        if size is None:  # nothing yet
            self._want_reading()
            return False
        if size == 0:
            self._eof()
            return False
        try:
            if self.buffered_protocol:
                protocol.buffer_updated(size)  # type: ignore[attr-defined]
            else:
                protocol.data_received(data)  # type: ignore[attr-defined]
        except Exception as exc:  # one connection's bug ends that connection only
            self._fatal(exc)
            return False
        if self.open and not self.reading_paused and not self.eof:
            self._want_reading()  # more is wanted: told by the loop when it comes
            return full
        return False

    def _want_reading(self) -> None:
        if not self.reading:
            self.reading = True  # kept while the connection waits (level-triggered)
            self.poller.add_reader(self.fd, self._read)

    def _eof(self) -> None:
        self.eof = True
        try:
            keep_open = self.protocol.eof_received()  # type: ignore[attr-defined]
        except Exception as exc:  # as the loop's transports: the error ends the connection
            self._fatal(exc)
            return
        if keep_open:
            self._stop_reading()  # the end of stream stays readable: not told again
        else:
            self.close()  # which forgets the descriptor without an epoll_ctl

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.poller.remove_reader(self.fd)

    def pause_reading(self) -> None:
        self.reading_paused = True  # the registration stays: see the module's docstring

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.open and not self.eof:
                self._want_reading()

    def is_reading(self) -> bool:
        return self.open and not self.reading_paused and not self.eof

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._write(data, False)

    def write_and_close(self, data: bytes) -> None:
        """write(data), then close(), the end of stream in the data's last segment where it
        fits: sent with MSG_MORE, that segment waits in the kernel for the FIN the close
        adds to it, one segment less through both ends' TCP stacks (on loopback ~4 µs of
        the proxy's kernel time per connection answered with Connection: close). A part
        the kernel did not take goes later by _flush, without MSG_MORE, which sends what
        was held with it."""
        self._write(data, True)
        self.close()

    def _write(self, data: bytes | bytearray | memoryview, more: bool) -> None:
        """Send `data` now, or queue it behind what is queued; `more`: MSG_MORE (see
        write_and_close). What the kernel does not take is queued."""
        if not self.open or self.shut or not data:
            return  # after close(), abort() or write_eof(), as the loop's transports: dropped
        if self.queued:
            self.queued.append(bytes(data))
            self.buffered += len(data)
            self._maybe_pause_protocol()
            return
        try:
            sent = send(self.fd, data, more)
        except OSError as exc:
            self._fatal(exc)
            return
        if sent < len(data):
            rest = bytes(data[sent:])
            self.queued.append(rest)
            self.buffered += len(rest)
            self._want_writable()
            self._maybe_pause_protocol()

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def _want_writable(self) -> None:
        if not self.writing:
            self.writing = True
            self.poller.add_writer(self.fd, self._flush)

    def _flush(self) -> None:
        queued = self.queued
        while queued:
            data = queued[0] if len(queued) == 1 else b"".join(queued)
            try:
                sent = send(self.fd, data)
            except OSError as exc:
                self._fatal(exc)
                return
            if not sent:
                return  # told again when writable
            self.buffered -= sent
            if sent < len(data):
                self.queued = queued = [data[sent:]]
                return
            self.queued = queued = []
        self.buffered = 0
        if self.writing:
            self.writing = False
            self.poller.remove_writer(self.fd)
        if self.writing_paused and self.open:
            self.writing_paused = False
            try:
                self.protocol.resume_writing()
            except Exception as exc:
                self._fatal(exc)
                return
        if self.shut:
            self._shutdown()
        if not self.open:  # closed with writes queued: they are out now
            self._end(None, linger=True)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: the client reads the end of the stream once what is queued is sent."""
        if not self.open or self.shut:
            return
        self.shut = True
        if not self.queued:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            shutdown_write(self.fd)
        except OSError as exc:
            self._fatal(exc)

    # -- ending ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return not self.open

    def close(self) -> None:
        """Send what is queued, then close; connection_lost(None) soon."""
        if not self.open:
            return
        self.open = False
        if self.queued:
            self._stop_reading()  # the descriptor stays open while the queue goes out
        else:
            self._end(None, linger=True)

    def abort(self) -> None:
        """Close at once, dropping what is queued; connection_lost(None) soon."""
        self._end(None)

    def _fatal(self, exc: BaseException) -> None:
        self._end(exc if isinstance(exc, OSError) else None)
        if not isinstance(exc, OSError):
            log.error("connection: %r", exc, exc_info=exc)

    def _end(self, exc: Exception | None, linger: bool = False) -> None:
        """Close the socket (drained first when `linger` and the client's end of stream
        was not read: see net.linger) and tell the protocol soon."""
        if self.ended:
            return
        self.ended = True
        self.open = False
        self.queued = []
        self.buffered = 0
        self.reading = self.writing = False
        if linger and not self.eof:
            close_lingering(self.loop, self.poller, self.fd)
        else:
            close_at_once(self.poller, self.fd)
        self.poller.detach()
        self.loop.call_soon(TELL_LOST, self, exc)

    # -- protocol and information ----------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol
        self.buffered_protocol = isinstance(protocol, BUFFERED_PROTOCOL)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            if self.sockname is None and not self.ended:
                try:
                    self.sockname = getsockname(self.fd)
                except OSError:
                    return default
            return self.sockname if self.sockname is not None else default
        return default  # no "socket": a connection here is a descriptor
