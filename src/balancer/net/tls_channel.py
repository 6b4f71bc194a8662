"""OpenSSL's state of one TLS client connection, as net.tls_transport drives it.

Two kinds serve the same interface (`TlsChannel`): net/_tls.c's `Connection`, made on a
`ServerContext` (what net.tls builds when that module is built: OpenSSL called from C, see
there why), and `SocketChannel`, Python's `ssl` on an `ssl.SSLContext` (a build without
net/_tls.c, BALANCER_PURE=1, or a caller's own context). Waiting is a value, not an
exception: `handshake()` says what the connection waits for, `read()` gives None and
`write()` 0 when the socket has nothing or takes nothing now. A channel never closes its
descriptor: the transport does, after `release()`.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Protocol

from balancer.net.tls_socket import TlsSocket

# What `handshake()` answers (net/_tls.c's values).
HANDSHAKE_DONE: Final = 0
WANTS_READ: Final = 1
WANTS_WRITE: Final = 2

Buffer = bytes | bytearray | memoryview


class TlsChannel(Protocol):
    """See net/_tls.c for what each call accepts, answers and raises."""

    @property
    def context(self) -> Any: ...
    def handshake(self) -> int: ...
    def read(self, size: int) -> bytes | None: ...
    def write(self, data: Buffer) -> int: ...
    def pending(self) -> int: ...
    def shutdown(self) -> None: ...
    def release(self) -> None: ...
    def selected_alpn_protocol(self) -> str | None: ...
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def compression(self) -> str | None: ...
    def session_reused(self) -> bool: ...
    def peer_certificate(self) -> bytes | None: ...


class SocketChannel:
    """Python's `ssl` on the descriptor `fd`: OpenSSL's connection object made on a
    TlsSocket (see net.tls_socket) with `SSLContext._wrap_socket`, without ssl.py's SSLSocket
    wrappers. Raises OSError when OpenSSL's object cannot be made."""

    def __init__(self, context: ssl.SSLContext, family: int, type_: int, proto: int, fd: int) -> None:
        sock = TlsSocket(family, type_, proto, fd)
        try:
            # Its `owner` (None) is what SNI callbacks would get as the connection, so they
            # get the socket, which passes `context` on (TlsSocket).
            sock.tls = context._wrap_socket(sock, True, None)  # type: ignore[attr-defined]
        except OSError:
            sock.detach()  # the descriptor stays the caller's
            raise
        self.sock = sock
        self.tls: Any = sock.tls

    @property
    def context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = self.tls.context
        return context

    def handshake(self) -> int:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return WANTS_READ
        except ssl.SSLWantWriteError:
            return WANTS_WRITE
        return HANDSHAKE_DONE

    def read(self, size: int) -> bytes | None:
        try:
            data: bytes = self.tls.read(size)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLEOFError:  # the client's end of the stream without close_notify
            return b""
        return data

    def write(self, data: Buffer) -> int:
        try:
            written: int = self.tls.write(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0
        return written

    def pending(self) -> int:
        pending: int = self.tls.pending()
        return pending

    def shutdown(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):  # the connection is ending
            self.tls.shutdown()

    def release(self) -> None:
        self.sock.detach()

    def selected_alpn_protocol(self) -> str | None:
        protocol: str | None = self.tls.selected_alpn_protocol()
        return protocol

    def version(self) -> str | None:
        version: str | None = self.tls.version()
        return version

    def cipher(self) -> tuple[str, str, int] | None:
        cipher: tuple[str, str, int] | None = self.tls.cipher()
        return cipher

    def compression(self) -> str | None:
        compression: str | None = self.tls.compression()
        return compression

    def session_reused(self) -> bool:
        return bool(self.tls.session_reused)

    def peer_certificate(self) -> bytes | None:
        try:
            der: bytes | None = self.tls.getpeercert(True)
        except ValueError:  # the handshake is not done
            return None
        return der


FrontendContext = Any  # ssl.SSLContext, or net/_tls.c's ServerContext when it is built


def channel_opener(context: FrontendContext, family: int, type_: int, proto: int) -> Callable[[int], TlsChannel]:
    """What makes the TLS channel of an accepted descriptor on a socket of this family,
    type and protocol, with `context`: net/_tls.c's Connection for its ServerContext,
    a SocketChannel for an ssl.SSLContext."""
    if isinstance(context, ssl.SSLContext):
        return partial(SocketChannel, context, family, type_ | _socket.SOCK_NONBLOCK, proto)
    opener: Callable[[int], TlsChannel] = context.connection
    return opener


def decoded_certificate(der: bytes | None) -> dict[str, Any] | None:
    """A certificate as `SSLSocket.getpeercert()` gives it (subject, issuer, validity,
    subjectAltName, ...), from its DER form. Python decodes certificates from a file only."""
    if der is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as file:
        file.write(ssl.DER_cert_to_PEM_cert(der))
    try:
        decoded: dict[str, Any] = ssl._ssl._test_decode_cert(file.name)  # type: ignore[attr-defined]
        return decoded
    finally:
        os.unlink(file.name)
