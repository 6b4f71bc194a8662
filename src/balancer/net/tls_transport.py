"""TLS termination on the socket itself: OpenSSL reads and writes the client's descriptor.

The event loop's TLS (uvloop's SSLProtocol, like asyncio's) runs OpenSSL over memory BIOs:
every record is read into a loop buffer, copied into a BIO, decrypted, and the answer takes
the way back; each connection also keeps the loop's read buffer and both BIOs for its whole
life: about 25 KiB per idle connection, against about 14 KiB for OpenSSL on a socket (what
HAProxy and NGINX do). Here OpenSSL's connection object is made on the descriptor
(net.tls_channel: from C, net/_tls.c, or Python's `ssl` where that is not built): the
handshake, the records and the alerts go straight between OpenSSL and the kernel, OpenSSL
releases its buffers while a connection is idle (SSL_MODE_RELEASE_BUFFERS), and a refused
handshake's alert (protocol_version, handshake_failure) reaches the client because OpenSSL
writes it before the failure is reported.

`TlsAcceptor` accepts from a listening socket (net.acceptor) and gives each connection a
`TlsTransport`, which speaks the part of asyncio's Transport interface the sessions use.
The protocol is made and told `connection_made` once the handshake is done (within
`handshake_timeout`, else the connection is cut) and a first read found the client still
there; a failed handshake never reaches it, as with the loop's TLS, nor does a client that
resets during the handshake or ends the connection with its Finished. A connection
waits to read or write in the acceptor's Poller (net.poller), as plain ones do: a
handshake always waits for the client's Finished, and the loop's `add_reader` cost it four
system calls in and one or two out, where the Poller costs one in and, at a close, none.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from balancer.net.acceptor import Acceptor
from balancer.net.deadline import Deadline
from balancer.net.linger import close_at_once, close_lingering
from balancer.net.poller import Poller
from balancer.net.proxy_accept import ProxyHeaderBeforeTls
from balancer.net.socket_calls import close_descriptor, getsockname, socket_error
from balancer.net.tls_channel import (
    HANDSHAKE_DONE,
    WANTS_READ,
    WANTS_WRITE,
    FrontendContext,
    TlsChannel,
    channel_opener,
    decoded_certificate,
)
from balancer.net.write_limits import GONE, TELL_LOST, WriteLimits

log = logging.getLogger(__name__)

READ_SIZE: Final = 65536  # at most this much per SSL_read
READS_PER_EVENT: Final = 16  # then other connections get their turn (what remains is read next pass)
# The most one SSL_read returns: one record's plaintext. A shorter read most likely emptied
# the socket; the next record, if any, wakes the reader again (level-triggered), so no read
# is made only to be told "want read" (with Python's `ssl`, an exception per read).
FULL_RECORD: Final = 16384

# Connection states (Final: compiled, a constant is inlined; a global is a dict lookup per use).
HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSING: Final = 2  # close() called: what is buffered goes out, then close_notify and close
CLOSED: Final = 3

# The socket errors of a connection the client ended (a reset; a peer gone silent).
RESET: Final = errno.ECONNRESET
BROKEN: Final = errno.EPIPE
TIMED_OUT: Final = errno.ETIMEDOUT


class TlsAcceptor(Acceptor):
    """Starts TLS with `context` (net.tls_channel: a ServerContext, or an ssl.SSLContext) on
    each connection accepted from `sock`; `make_protocol` is called once per connection
    whose handshake is done. With `accept_proxy`, each connection's PROXY header is read
    first (within `handshake_timeout`) and the address it gives is the protocol's `proxied`."""

    def __init__(
        self,
        sock: socket.socket,
        context: FrontendContext,
        make_protocol: Callable[[], asyncio.BaseProtocol],
        handshake_timeout: float,
        accept_proxy: bool = False,
    ) -> None:
        super().__init__(sock)
        self.open_channel = channel_opener(context, self.family, self.type, self.proto)
        self.make_protocol = make_protocol
        self.handshake_timeout = handshake_timeout
        self.accept_proxy = accept_proxy

    def accepted(self, fd: int, peer: Any) -> None:
        if self.accept_proxy:
            # SOCK_NONBLOCK tells the socket object the descriptor is (accept4 made it so).
            raw = _socket.socket(self.family, self.type | socket.SOCK_NONBLOCK, self.proto, fd)
            ProxyHeaderBeforeTls(self.loop, raw, self.handshake_timeout, partial(self._proxied, peer))
        else:
            self._start(fd, peer, None)

    def _proxied(self, peer: Any, raw: _socket.socket, proxied: tuple[str, int] | None) -> None:
        self._start(raw.detach(), peer, proxied)

    def _start(self, fd: int, peer: Any, proxied: tuple[str, int] | None) -> None:
        """TLS on an accepted descriptor, for a new protocol (told the PROXY header's client)."""
        try:
            channel = self.open_channel(fd)
        except OSError:
            close_descriptor(fd)
            return
        TlsTransport(self.loop, self.poller, fd, peer, channel, self.make_protocol, self.handshake_timeout, proxied)


class TlsTransport(WriteLimits):
    """One TLS connection: a transport (write, close, abort, flow control both ways, extra
    info) for the protocol it serves, over the descriptor `fd` it owns and closes, from the
    client at `peer` (as accept gave it). The handshake, reads and writes go to `channel`
    (net.tls_channel), where waiting is a value rather than an exception."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        poller: Poller,
        fd: int,
        peer: Any,
        channel: TlsChannel,
        make_protocol: Callable[[], asyncio.BaseProtocol],
        timeout: float,
        proxied: tuple[str, int] | None = None,
    ) -> None:
        # The protocol is made once the handshake is done (`make_protocol`, told `proxied`,
        # the PROXY header's client): a session for each handshake that fails or is given up
        # (a scanner's, a health check's reset) would be made only to be freed.
        super().__init__(GONE)
        self.make_protocol = make_protocol
        self.proxied = proxied
        self.loop = loop
        self.poller = poller
        poller.attach()  # detached when the socket is closed or handed to net.linger
        self.channel = channel
        self.fd = fd
        self.state = HANDSHAKE
        self.reading_paused = False
        self.reading = False  # the reader callback is registered
        self.writing = False  # the writer callback is registered
        # An SSL_write that wanted the socket writable must be retried with the same bytes;
        # what is written after it waits in `queued`.
        self.unsent: bytes | None = None
        self.queued: list[bytes] = []
        self.read_wants_write = False  # an SSL_read needed to write first (a TLS 1.3 key update)
        self.early: bytes | None = None  # read as the handshake ended, for the protocol's first data_received
        # The handshake's timeout, filed in the loop's wheel (net.deadline): a loop timer of
        # its own (uvloop's TimerHandle and libuv timer, made, cancelled, freed) cost about
        # 3,600 instructions a connection more.
        self.deadline = Deadline(loop, self._handshake_timed_out)
        self.deadline.set(timeout)
        self.peer = peer  # "peername": the client's address as accept gave it
        self.sockname: Any = None  # asked of the socket when first wanted
        self._handshake()

    # -- handshake -------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            outcome = self.channel.handshake()
        except (ssl.SSLError, OSError, ValueError) as exc:
            # OpenSSL has written the alert (if any) to the socket already.
            log.debug("TLS handshake failed: %s", exc)
            self._cut()
            return
        if outcome != HANDSHAKE_DONE:
            self._want(read=outcome == WANTS_READ, write=outcome == WANTS_WRITE)
            return
        # The client's first records may wait already: read before the protocol is made,
        # so that a client gone by now (a reset or a close right after its Finished, as
        # `openssl s_time` and TLS health checks end) is cut like a failed handshake, and
        # costs no session. A client that sent its request gets it read here instead of
        # in the first _read: no read more.
        try:
            self.early = self.channel.read(READ_SIZE)
        except ssl.SSLWantWriteError:
            self.read_wants_write = True
        except (ssl.SSLError, OSError):
            self._cut()
            return
        if self.early == b"":
            self._cut()
            return
        try:
            protocol = self.make_protocol()
        except Exception:  # one connection's failure is that connection's
            log.exception("TLS connection: making its session failed")
            self._cut()
            return
        self.deadline.cancel()
        self.state = OPEN
        self.protocol = protocol
        if self.proxied is not None:
            protocol.proxied = self.proxied  # type: ignore[attr-defined]  # every session has it
        protocol.connection_made(self)  # type: ignore[arg-type]  # duck-typed Transport
        if self.state == OPEN:
            # The reader the handshake registered usually stays: no epoll change here.
            wants_read = not self.reading_paused and not self.read_wants_write
            self._want(read=wants_read, write=self.unsent is not None or self.read_wants_write)
            if wants_read and self.early is not None:
                self._read()  # a paused protocol gets them once it resumes

    def _handshake_timed_out(self) -> None:
        if self.state == HANDSHAKE:
            self._cut()

    def _cut(self) -> None:
        """Close a connection whose protocol never started (handshake failed or too slow)."""
        self.state = CLOSED
        self._close_socket()

    def _close_socket(self, linger: bool = False) -> None:
        """Close the socket (`linger`: drained first if the client sent more, net.linger):
        see net.linger's close_at_once. The handshake's deadline, which holds this
        transport's method, is dropped too."""
        self.deadline.cancel()
        self.reading = self.writing = False
        self.channel.release()
        if linger:
            close_lingering(self.loop, self.poller, self.fd)
        else:
            close_at_once(self.poller, self.fd)
        self.poller.detach()

    # -- event registration ----------------------------------------------------------------

    def _want(self, read: bool, write: bool) -> None:
        if read != self.reading:
            self.reading = read
            if read:
                self.poller.add_reader(self.fd, self._on_readable)
            else:
                self.poller.remove_reader(self.fd)
        if write != self.writing:
            self.writing = write
            if write:
                self.poller.add_writer(self.fd, self._on_writable)
            else:
                self.poller.remove_writer(self.fd)

    def _on_readable(self) -> None:
        if self.state == HANDSHAKE:
            error = socket_error(self.fd)
            if error in (RESET, BROKEN, TIMED_OUT):
                # The client reset the connection (its error wakes the reader): what it sent
                # still waits to be read, but nothing can reach it any more. HAProxy stops
                # here too, rather than verify the client's Finished and make session
                # tickets for a socket that refuses them. Not logged, even at debug: a TLS
                # health check ends so every time, and Logger.debug is interpreted Python.
                # Other errors are soft ones, which SO_ERROR hands over when there is no
                # hard one (an ICMP report such as EHOSTUNREACH about a live connection):
                # the handshake goes on.
                self._cut()
                return
            self._handshake()
        else:
            self._read()

    def _on_writable(self) -> None:
        if self.state == HANDSHAKE:
            self._handshake()
            return
        if self.read_wants_write:
            self.read_wants_write = False
            self._want(read=self.state == OPEN and not self.reading_paused, write=self.writing)
            self._read()
        self._flush()

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        protocol = self.protocol
        channel = self.channel
        for _ in range(READS_PER_EVENT):
            if self.state != OPEN or self.reading_paused:
                return
            data = self.early  # read with the handshake, before the protocol was made
            if data is not None:
                self.early = None
            else:
                try:
                    data = channel.read(READ_SIZE)
                except ssl.SSLWantWriteError:
                    self.read_wants_write = True
                    self._want(read=False, write=True)
                    return
                except (ssl.SSLError, OSError) as exc:
                    self._fatal(exc)
                    return
                if data is None:
                    return
                if not data:  # close_notify, or the client's end of the stream
                    self._eof()
                    return
            try:
                protocol.data_received(data)  # type: ignore[attr-defined]
            except Exception as exc:  # one connection's bug ends that connection only
                self._fatal(exc)
                return
            if len(data) < FULL_RECORD:
                break
        if self.state == OPEN and channel.pending():  # decrypted bytes the kernel will not signal
            self.loop.call_soon(self._read)

    def _eof(self) -> None:
        self._want(read=False, write=self.writing)
        try:
            keep_open = self.protocol.eof_received()  # type: ignore[attr-defined]
        except BaseException as exc:  # as the loop's transports: the error ends the connection
            self._fatal(exc)
            return
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if self.state == OPEN and not self.reading_paused:
            self.reading_paused = True
            self._want(read=False, write=self.writing)

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.state == OPEN:
                self._want(read=not self.read_wants_write, write=self.writing)
                self.loop.call_soon(self._read)  # OpenSSL may hold decrypted bytes already

    def is_reading(self) -> bool:
        return self.state == OPEN and not self.reading_paused

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.state != OPEN or not data:
            return  # after close() or abort(), as the loop's transports: dropped
        if self.unsent is not None or self.queued:
            self.queued.append(bytes(data))
            self.buffered += len(data)
            self._maybe_pause_protocol()
            return
        try:
            written = self.channel.write(data)
        except (ssl.SSLError, OSError) as exc:
            self._fatal(exc)
            return
        if written == 0:
            self.unsent = bytes(data)
            self.buffered += len(data)
            self._want(read=self.reading, write=True)
            self._maybe_pause_protocol()

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def _flush(self) -> None:
        channel = self.channel
        while True:
            if self.unsent is None:
                if not self.queued:
                    break
                self.unsent = b"".join(self.queued) if len(self.queued) > 1 else self.queued[0]
                self.queued = []
            try:
                written = channel.write(self.unsent)
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if written == 0:
                return
            self.buffered -= len(self.unsent)
            self.unsent = None
        self.buffered = 0
        self._want(read=self.reading, write=self.read_wants_write)
        if self.writing_paused:
            self.writing_paused = False
            if self.state == OPEN:
                self.protocol.resume_writing()
        if self.state == CLOSING:
            self._close_now()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close (close_notify ends both ways)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    # -- ending ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self.state >= CLOSING

    def close(self) -> None:
        """Send what is buffered, then close_notify, then close; connection_lost(None) soon."""
        if self.state >= CLOSING:
            return
        started = self.state == OPEN
        self.state = CLOSING
        self._want(read=False, write=self.writing)
        if not started:
            self._cut()
        elif self.unsent is None and not self.queued:
            self._close_now()

    def _close_now(self) -> None:
        self.state = CLOSED
        self.channel.shutdown()  # close_notify; the client's is not awaited
        self._close_socket(linger=True)
        self.loop.call_soon(TELL_LOST, self, None)

    def abort(self) -> None:
        """Close at once, dropping what is buffered; connection_lost(None) soon."""
        self._end(None)

    def _fatal(self, exc: BaseException) -> None:
        self._end(exc if isinstance(exc, OSError) else None)
        if not isinstance(exc, OSError):  # ssl.SSLError is one
            log.error("TLS connection: %r", exc, exc_info=exc)

    def _end(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        opened = self.state != HANDSHAKE
        self.state = CLOSED
        self.unsent = None
        self.queued = []
        self.early = None
        self.buffered = 0
        self._close_socket()
        if opened:
            self.loop.call_soon(TELL_LOST, self, exc)

    # -- protocol and information ----------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio's extra information, less "socket" (the descriptor is the transport's
        alone): "ssl_object" is the channel (selected_alpn_protocol, version, cipher, ...)."""
        channel = self.channel
        value: Any = None
        try:
            if name == "peername":
                value = self.peer
            elif name == "sockname":  # asked per request by logs and headers
                if self.sockname is None and self.state != CLOSED:
                    self.sockname = getsockname(self.fd)
                value = self.sockname
            elif name == "ssl_object":
                value = channel
            elif name == "sslcontext":
                value = channel.context
            elif name == "peercert":
                value = decoded_certificate(channel.peer_certificate())
            elif name == "cipher":
                value = channel.cipher()
            elif name == "compression":
                value = channel.compression()
        except (OSError, ValueError):
            value = None
        return default if value is None else value
