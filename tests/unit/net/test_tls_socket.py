"""net.tls_transport.wrap: TLS on an accepted socket through OpenSSL's own object
(SSLContext._wrap_socket), and through ssl.SSLSocket where that cannot serve (SNI callback)."""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

import pytest
from tests.support.tls import make_certificate

from balancer.net.tls_transport import TlsSocket, wrap


def handshake(server: TlsSocket, client: ssl.SSLSocket) -> None:
    """Both ends, non-blocking, bounded."""
    server_done = client_done = False
    for _ in range(100):
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        if server_done and client_done:
            break
    assert server_done and client_done


def exchange(server: TlsSocket, client: ssl.SSLSocket) -> None:
    """Handshake, then a message each way and close_notify."""
    handshake(server, client)
    assert server.send(b"hello") == 5
    assert client.recv(100) == b"hello"
    client.sendall(b"world")
    assert server.recv(100) == b"world"
    with pytest.raises(ssl.SSLWantReadError):
        server.recv(100)
    assert server.pending() == 0
    assert server.ssl_object().version() in ("TLSv1.2", "TLSv1.3")
    assert server.getpeername() is not None
    # close_notify goes; OpenSSL then wants the client's, which is not awaited (the
    # transport ignores this, as it did SSLSocket.unwrap's).
    with contextlib.suppress(ssl.SSLWantReadError):
        server.shutdown_tls()
    client.setblocking(True)
    client.settimeout(5)
    assert client.recv(100) == b""  # the server's close_notify
    server.close()


@pytest.mark.parametrize("sni", [False, True], ids=["openssl-object", "sslsocket-for-sni"])
def test_a_tls_socket_serves_a_real_client(tmp_path: Path, sni: bool) -> None:
    cert = make_certificate(tmp_path, "a.example.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.pem))
    if sni:
        context.sni_callback = lambda connection, name, ctx: None
    client_context = ssl.create_default_context(cafile=str(cert.crt))
    raw, peer = socket.socketpair()
    with raw, peer:
        raw.setblocking(False)
        peer.setblocking(False)
        server = wrap(context, raw)
        # Without an SNI callback, OpenSSL's own object (no SSLSocket) where Python has it.
        assert server.public == (sni or not hasattr(ssl.SSLContext, "_wrap_socket"))
        client = client_context.wrap_socket(peer, server_hostname="a.example.test", do_handshake_on_connect=False)
        with client:
            exchange(server, client)


def test_the_end_of_stream_without_close_notify_reads_as_the_end(tmp_path: Path) -> None:
    cert = make_certificate(tmp_path, "a.example.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.pem))
    client_context = ssl.create_default_context(cafile=str(cert.crt))
    raw, peer = socket.socketpair()
    with raw:
        raw.setblocking(False)
        peer.setblocking(False)
        server = wrap(context, raw)
        client = client_context.wrap_socket(peer, server_hostname="a.example.test", do_handshake_on_connect=False)
        handshake(server, client)
        client.close()  # the socket only: no close_notify
        assert server.recv(100) == b""  # as SSLSocket with suppress_ragged_eofs
        server.close()
