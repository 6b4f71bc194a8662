"""net.tls_transport on uvloop with real TLS clients over 127.0.0.1: flow control both ways
with megabytes in flight, a close that delivers everything then close_notify, records
OpenSSL decrypted ahead of a paused reader, a silent client cut at the handshake timeout,
a client's reset right after its Finished, a protocol's exception that ends its connection
only, client certificates verified; each with both kinds of TLS channel (net.tls_channel).
(Through `balancer run`: the TLS e2e tests, h2 over TLS, and bench/tls.py.)"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from tests.support.collector import cyclic_collector_off
from tests.support.descriptors import open_sockets, open_sockets_and_epolls, open_sockets_once_down_to
from tests.support.echo_protocol import (
    AnswerThenClose,
    Echo,
    Opened,
    echo_and_end_three_ways,
    freed_once_lost,
    more_after_the_last_request,
)
from tests.support.listening import listening_socket
from tests.support.tls import make_certificate

from balancer.config import ConfigError
from balancer.config.model import FrontendTLS
from balancer.net import tls as tls_module
from balancer.net.tls import INTERMEDIATE_CIPHERS, INTERMEDIATE_SUITES, frontend_context
from balancer.net.tls_transport import TlsAcceptor
from balancer.server import parse_runnable


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cert")
    key, cert = folder / "key.pem", folder / "cert.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=a.example"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


# Both kinds of TLS channel (net.tls_channel): OpenSSL from C (net/_tls.c, what a frontend
# uses where it is built) and Python's ssl (the build without it).
@pytest.fixture(scope="module", params=["native", "python-ssl"])
def contexts(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> tuple[Any, ssl.SSLContext]:
    cert, key = certificate
    server: Any
    if request.param == "native":
        if tls_module._tls is None:
            pytest.skip("net/_tls.c is not built here (BALANCER_PURE=1, or no OpenSSL headers)")
        server = tls_module._tls.ServerContext(
            str(cert), str(key), INTERMEDIATE_CIPHERS, INTERMEDIATE_SUITES, False, (), None, 0
        )
    else:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    return server, client


def serve(
    contexts: tuple[Any, ssl.SSLContext],
    scenario: Callable[[int, ssl.SSLContext], Awaitable[None]],
    make: Callable[[], asyncio.BaseProtocol] = Echo,
    handshake_timeout: float = 5.0,
) -> None:
    async def main() -> None:
        listening = listening_socket()
        acceptor = TlsAcceptor(listening, contexts[0], make, handshake_timeout)
        try:
            await asyncio.wait_for(scenario(listening.getsockname()[1], contexts[1]), 30)
        finally:
            acceptor.close()

    Echo.made = []
    uvloop.run(main())


def test_megabytes_both_ways_with_flow_control_then_a_clean_close(contexts: Any) -> None:
    payload = bytes(range(256)) * 4096 * 16  # 16 MiB: more than the kernel's buffers hold

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, ssl=client, server_hostname="a.example")

        async def send() -> None:
            for offset in range(0, len(payload), 65536):
                writer.write(payload[offset : offset + 65536])
                await writer.drain()

        sending = asyncio.create_task(send())
        await asyncio.sleep(0.3)  # the client does not read for a while: the server must back off
        (echo,) = Echo.made
        assert echo.paused_writes >= 1
        got = await reader.readexactly(len(payload))
        await sending
        assert got == payload
        echo.transport.close()
        assert await reader.read() == b""  # close_notify: a clean end, not a ragged one
        writer.close()
        deadline = time.monotonic() + 5
        while not echo.lost:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert echo.lost == [None]

    serve(contexts, scenario)


def test_records_decrypted_ahead_of_a_paused_reader_are_delivered_on_resume(contexts: Any) -> None:
    class Stopping(Echo):
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.05, self.transport.resume_reading)

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        messages = [b"message %d;" % n for n in range(20)]
        for message in messages:  # one record each, most decrypted before the reader resumes
            writer.write(message)
        await writer.drain()
        wanted = b"".join(messages)
        got = await asyncio.wait_for(reader.readexactly(len(wanted)), 10)
        assert got == wanted
        writer.close()

    serve(contexts, scenario, make=Stopping)


def test_records_never_read_do_not_turn_the_close_into_a_reset(contexts: Any) -> None:
    """A client that sends more after its last request gets the whole answer and the
    close_notify, not a reset that destroys the answer's unread part (what came before the
    close_notify is read by OpenSSL's wait for the client's, what comes after by net.linger)."""

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, ssl=client, server_hostname="a.example")
            assert await more_after_the_last_request(reader, writer) == AnswerThenClose.ANSWER
            writer.close()

    serve(contexts, scenario, make=AnswerThenClose)


def test_closed_connections_are_freed_at_once_not_by_the_cyclic_collector(contexts: Any) -> None:
    """A protocol holds its transport; the transport lets go of it as it tells
    connection_lost, so a closed connection (the session, OpenSSL's object and its buffers)
    is freed then, not at the cyclic collector's next pass: before, a worker taking TLS
    handshakes grew by ~20 KiB per connection until that pass came (~100 MiB per 5,000)."""

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        async def close_notify(opened: Opened) -> None:
            opened[1].close()  # the server's end of stream, then its close

        await echo_and_end_three_ways(lambda: asyncio.open_connection("127.0.0.1", port, ssl=client), close_notify)
        assert await freed_once_lost() == []

    with cyclic_collector_off():
        serve(contexts, scenario)


def test_a_silent_client_is_cut_at_the_handshake_timeout(contexts: Any) -> None:
    async def scenario(port: int, client: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no TLS: says nothing
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.2 <= time.monotonic() - started < 3
        assert Echo.made == []  # the protocol never started
        writer.close()

    serve(contexts, scenario, handshake_timeout=0.3)


async def handshake_in_memory(
    sock: socket.socket, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """The client's side of a TLS 1.3 handshake on the connected, non-blocking `sock`, in
    memory: done once its Finished waits, not sent yet, in the outgoing BIO, for the test
    to send with what it wants in the same segment. The TLS object and its two BIOs."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client.wrap_bio(incoming, outgoing, server_hostname="a.example")
    for _ in range(10):  # a ClientHello out, the server's flight in
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                await loop.sock_sendall(sock, outgoing.read())
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert data, "the server closed during the handshake"
            incoming.write(data)
    assert tls.version() == "TLSv1.3"
    return tls, incoming, outgoing


async def connected(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


def test_a_client_that_resets_after_its_finished_never_reaches_the_protocol(contexts: Any) -> None:
    """`openssl s_time -new` and TLS health checks end so: a client's handshake is done once
    its Finished is sent, and it closes at once, with a reset. The server stops at the error,
    as HAProxy does, rather than verify the Finished, write session tickets to a socket that
    refuses them and start a session that can only end."""

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        before = open_sockets()
        sock = await connected(port)
        _, _, outgoing = await handshake_in_memory(sock, client)
        # The Finished, then the reset, before the server's loop runs again.
        finished = outgoing.read()
        assert sock.send(finished) == len(finished)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert await open_sockets_once_down_to(before) == before  # the server closed its end
        assert Echo.made == []  # the protocol never started

    serve(contexts, scenario)


def test_a_client_that_closes_with_its_finished_never_reaches_the_protocol(contexts: Any) -> None:
    """A client whose close_notify and end of stream come with its Finished (a TLS check that
    only wants the handshake) is closed once the handshake is done, without a session:
    nothing could be read from it."""

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        before = open_sockets()
        sock = await connected(port)
        tls, _, outgoing = await handshake_in_memory(sock, client)
        with contextlib.suppress(ssl.SSLWantReadError):  # the server's close_notify is not awaited
            tls.unwrap()
        await asyncio.get_running_loop().sock_sendall(sock, outgoing.read())  # Finished, close_notify
        sock.shutdown(socket.SHUT_WR)
        assert await open_sockets_once_down_to(before + 1) == before + 1  # the server closed its end
        assert Echo.made == []  # the protocol never started
        sock.close()

    serve(contexts, scenario)


def test_records_sent_with_the_finished_reach_a_protocol_paused_as_it_starts(contexts: Any) -> None:
    """A request that came with the client's Finished is read as the handshake ends; a
    protocol that pauses reading as it starts (a session parked over maxconn) gets it once
    it resumes, not before."""

    class PausedAtStart(Echo):
        resumed = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.transport.pause_reading()

            def resume() -> None:
                self.resumed = True
                self.transport.resume_reading()

            asyncio.get_running_loop().call_later(0.1, resume)

        def data_received(self, data: bytes) -> None:
            assert self.resumed, "data_received while paused"
            super().data_received(data)

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        sock = await connected(port)
        tls, incoming, outgoing = await handshake_in_memory(sock, client)
        message = b"hello with the Finished"
        tls.write(message)
        await loop.sock_sendall(sock, outgoing.read())  # the Finished and the message, at once
        echoed = b""
        while len(echoed) < len(message):
            try:
                echoed += tls.read(65536)
            except ssl.SSLWantReadError:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                assert data, "the server closed"
                incoming.write(data)
        assert echoed == message
        (echo,) = Echo.made
        assert echo.resumed
        sock.close()

    serve(contexts, scenario, make=PausedAtStart)


def test_a_session_that_cannot_be_made_closes_its_connection(contexts: Any) -> None:
    """The session is made once the handshake is done; a factory that raises there ends
    that connection (closed, the error logged), not the handshake's timeout, and the next
    connection is served."""
    calls: list[int] = []

    def make() -> asyncio.BaseProtocol:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no session for this one")
        return Echo()

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        before = open_sockets()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.example")
        # Closed without close_notify is closed all the same.
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # The server closed its end, well before its handshake timeout.
        assert await open_sockets_once_down_to(before) == before
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.example")
        writer.write(b"served")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"served"
        writer.close()

    serve(contexts, scenario, make=make, handshake_timeout=30.0)
    assert len(calls) == 2


def test_a_protocol_error_ends_its_connection_only(contexts: Any) -> None:
    async def scenario(port: int, client: ssl.SSLContext) -> None:
        broken_reader, broken = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        broken.write(b"boom")
        assert await asyncio.wait_for(broken_reader.read(), 5) == b""
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        third_reader, third = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        third.write(b"and new ones")
        assert await asyncio.wait_for(third_reader.readexactly(12), 5) == b"and new ones"
        for w in (broken, writer, third):
            w.close()

    serve(contexts, scenario, make=lambda: Echo(fail_on=b"boom"))


def test_a_connection_outlives_its_closed_acceptor_and_leaves_no_descriptor(contexts: Any) -> None:
    """A reload closes the acceptor while connections go on: an open connection still
    echoes, a new one is refused, and once the last one ends nothing of the acceptor stays
    open (its connections' shared epoll set included)."""
    server, client = contexts

    async def main() -> None:
        before = open_sockets_and_epolls()
        listening = listening_socket()
        port = listening.getsockname()[1]
        acceptor = TlsAcceptor(listening, server, Echo, 5.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.example")
        acceptor.close()
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 10) == b"still here"
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        deadline = time.monotonic() + 10
        while Echo.made[0].lost == [] and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert Echo.made[0].lost == [None]
        assert open_sockets_and_epolls() == before

    Echo.made = []
    uvloop.run(main())


class _Addresses(asyncio.Protocol):
    """Says which addresses its transport gives, once the handshake is done."""

    seen: list[tuple[Any, Any]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Addresses.seen.append((transport.get_extra_info("peername"), transport.get_extra_info("sockname")))
        transport.close()


def test_the_peer_address_is_the_one_accept_gave(contexts: Any) -> None:
    """The transport's peername is the client's own address (kept from accept, not asked of
    the socket again), its sockname the listener's."""

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.example")
        local = writer.get_extra_info("sockname")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert _Addresses.seen == [(local, ("127.0.0.1", port))]

    _Addresses.seen = []
    serve(contexts, scenario, make=_Addresses)


class _PeerCertificate(Echo):
    """An echo that keeps the client certificate its transport gives."""

    certificates: list[Any] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _PeerCertificate.certificates.append(transport.get_extra_info("peercert"))


@pytest.fixture(params=["native", "python-ssl"])
def frontend_channel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """net.tls's frontend contexts of either kind: net/_tls.c's, or Python's ssl as in a
    build without it."""
    if request.param == "native" and tls_module._tls is None:
        pytest.skip("net/_tls.c is not built here (BALANCER_PURE=1, or no OpenSSL headers)")
    if request.param == "python-ssl":
        monkeypatch.setattr(tls_module, "_tls", None)
    return str(request.param)


def test_a_required_client_certificate_is_verified_against_client_ca(tmp_path: Path, frontend_channel: str) -> None:
    """verify_client = "required": a client with a certificate from `client_ca` is served and
    its certificate is the transport's "peercert"; one without a certificate, or with
    another's, is refused before any session starts."""
    server = make_certificate(tmp_path, "a.example")
    member = make_certificate(tmp_path, "member.example")
    stranger = make_certificate(tmp_path, "stranger.example")
    tls = FrontendTLS(cert=[str(server.pem)], client_ca=str(member.crt), verify_client="required")
    context = frontend_context(tls, str(tmp_path))

    def client_with(certificate: Any) -> ssl.SSLContext:
        client = ssl.create_default_context(cafile=str(server.crt))
        if certificate is not None:
            client.load_cert_chain(certificate.crt, certificate.key)
        return client

    async def scenario(port: int, _: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_with(member), server_hostname="a.example"
        )
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        writer.close()
        for refused in (None, stranger):
            # TLS 1.3: the client's handshake ends with its Finished; the refusal is the
            # alert it reads next.
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_with(refused), server_hostname="a.example"
            )
            with pytest.raises(ssl.SSLError, match=r"ALERT_(CERTIFICATE_REQUIRED|UNKNOWN_CA)"):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert len(_PeerCertificate.certificates) == 1
        (subject,) = [rdn for rdn in _PeerCertificate.certificates[0]["subject"] if rdn[0][0] == "commonName"]
        assert subject == (("commonName", "member.example"),)

    _PeerCertificate.certificates = []
    serve((context, client_with(None)), scenario, make=_PeerCertificate)


class _ChosenContext(Echo):
    """An echo that keeps the context its transport says it uses."""

    contexts: list[Any] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _ChosenContext.contexts.append(transport.get_extra_info("sslcontext"))


def test_sni_chooses_the_certificate_by_name_and_by_wildcard(tmp_path: Path, frontend_channel: str) -> None:
    """Several certificates: the client's server name picks one, exactly or by a wildcard one
    label deep, whatever its case; an unknown name or none gets the first. The transport's
    "sslcontext" is the one chosen."""
    first = make_certificate(tmp_path, "a.example")
    wildcard = make_certificate(tmp_path, "*.b.example", stem="wildcard")
    context = frontend_context(FrontendTLS(cert=[str(first.pem), str(wildcard.pem)]), str(tmp_path))
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    expected = {
        "a.example": first,
        "www.B.Example": wildcard,
        "x.b.example": wildcard,
        "deeper.x.b.example": first,  # a wildcard is one label deep
        "unknown.example": first,
        None: first,
    }

    async def scenario(port: int, _: ssl.SSLContext) -> None:
        for name, certificate in expected.items():
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=name)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            sent = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert sent == ssl.PEM_cert_to_DER_cert(certificate.crt.read_text()), name
            writer.close()
        chosen = _ChosenContext.contexts
        assert chosen[0] is context and chosen[4] is context and chosen[5] is context
        assert chosen[1] is chosen[2] is not context

    _ChosenContext.contexts = []
    serve((context, client), scenario, make=_ChosenContext)


def test_workers_openssl_conf_names_the_frontends_tls13_suites():
    """Python's ssl (the build without net/_tls.c) gets the suites and the groups from the
    workers' OPENSSL_CONF only: it must hold the lists the C contexts are given."""
    conf = (Path(tls_module.__file__).parent / "openssl.cnf").read_text()
    assert re.search(rf"^Ciphersuites = {re.escape(tls_module.INTERMEDIATE_SUITES)}$", conf, re.M), conf
    assert re.search(r"^Options = PrioritizeChaCha$", conf, re.M), conf
    assert re.search(rf"^Groups = {re.escape(tls_module.INTERMEDIATE_GROUPS)}$", conf, re.M), conf


def test_a_frontends_own_tls13_suites_need_the_c_contexts(tmp_path: Path, frontend_channel: str) -> None:
    """`tls.ciphersuites` is served by net/_tls.c's contexts; a build with Python's ssl alone
    cannot set a context's TLS 1.3 suites, so `balancer check` refuses the key there, at its
    line, rather than serve the process's list. Mozilla's own list (the default) passes."""
    server = make_certificate(tmp_path, "a.example")
    head = f'[[frontend]]\nname = "www"\nbind = ":443"\ndefault_backend = "web"\ntls = {{ cert = ["{server.pem}"]'
    backend = '\n[[backend]]\nname = "web"\n  [[backend.server]]\n  name = "s1"\n  address = "10.0.0.1:80"\n'

    def problems(suites: str) -> list[str]:
        try:
            parse_runnable(f'{head}, ciphersuites = "{suites}" }}{backend}', str(tmp_path / "lb.toml"))
        except ConfigError as exc:
            return [str(problem) for problem in exc.problems]
        return []

    assert problems(INTERMEDIATE_SUITES) == []
    own = problems("TLS_CHACHA20_POLY1305_SHA256")
    if frontend_channel == "native":
        assert own == []
    else:
        (message,) = own
        assert message.startswith(f"{tmp_path / 'lb.toml'}:5: this build serves TLS with Python's ssl"), message


def test_a_frontends_own_groups_need_the_c_contexts(tmp_path: Path, frontend_channel: str) -> None:
    """`tls.curves` is served by net/_tls.c's contexts; a build with Python's ssl alone
    takes the workers' OPENSSL_CONF groups, so `balancer check` refuses another list there,
    at its line. Mozilla's own list (the default) passes."""
    server = make_certificate(tmp_path, "a.example")
    head = f'[[frontend]]\nname = "www"\nbind = ":443"\ndefault_backend = "web"\ntls = {{ cert = ["{server.pem}"]'
    backend = '\n[[backend]]\nname = "web"\n  [[backend.server]]\n  name = "s1"\n  address = "10.0.0.1:80"\n'

    def problems(curves: str) -> list[str]:
        try:
            parse_runnable(f'{head}, curves = "{curves}" }}{backend}', str(tmp_path / "lb.toml"))
        except ConfigError as exc:
            return [str(problem) for problem in exc.problems]
        return []

    assert problems(tls_module.INTERMEDIATE_GROUPS) == []
    own = problems("X25519")
    if frontend_channel == "native":
        assert own == []
    else:
        (message,) = own
        assert message.startswith(f"{tmp_path / 'lb.toml'}:5: this build serves TLS with Python's ssl"), message


def test_an_ocsp_file_beside_a_certificate_is_checked_or_refused_without_the_c_contexts(
    tmp_path: Path, frontend_channel: str
) -> None:
    """A `CERT.ocsp` file is stapled by net/_tls.c's contexts, which refuse one that is no
    OCSP response; Python's ssl cannot staple, so a build without net/_tls.c refuses the
    file rather than serve without it. Both at the line of `cert`. (A response stapled:
    tests/e2e/test_e2e_tls_ocsp.py.)"""
    server = make_certificate(tmp_path, "a.example")
    Path(f"{server.pem}.ocsp").write_bytes(b"not an OCSP response")
    text = (
        f'[[frontend]]\nname = "www"\nbind = ":443"\ndefault_backend = "web"\ntls = {{ cert = ["{server.pem}"] }}'
        '\n[[backend]]\nname = "web"\n  [[backend.server]]\n  name = "s1"\n  address = "10.0.0.1:80"\n'
    )
    with pytest.raises(ConfigError) as refused:
        parse_runnable(text, str(tmp_path / "lb.toml"))
    (message,) = [str(problem) for problem in refused.value.problems]
    assert message.startswith(f"{tmp_path / 'lb.toml'}:5: "), message
    if frontend_channel == "native":
        assert f"{server.pem}.ocsp: not a successful OCSP response" in message, message
    else:
        assert f"cannot set the OCSP response to staple ({server.pem}.ocsp)" in message, message


def test_ticket_keys_need_the_c_contexts_and_a_bad_key_is_refused_at_its_line(
    tmp_path: Path, frontend_channel: str
) -> None:
    """`tls.ticket_keys` is set by net/_tls.c's contexts; Python's ssl has no call for it, so
    `balancer check` refuses the key there, at its line. A file with a key of the wrong size
    is refused at the same line, naming the file's line."""
    server = make_certificate(tmp_path, "a.example")
    head = f'[[frontend]]\nname = "www"\nbind = ":443"\ndefault_backend = "web"\ntls = {{ cert = ["{server.pem}"]'
    backend = '\n[[backend]]\nname = "web"\n  [[backend.server]]\n  name = "s1"\n  address = "10.0.0.1:80"\n'
    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
    bad.write_text(base64.b64encode(os.urandom(80)).decode() + "\n" + base64.b64encode(os.urandom(32)).decode() + "\n")

    def problems(keys: Path) -> list[str]:
        try:
            parse_runnable(f'{head}, ticket_keys = "{keys}" }}{backend}', str(tmp_path / "lb.toml"))
        except ConfigError as exc:
            return [str(problem) for problem in exc.problems]
        return []

    at_line = f"{tmp_path / 'lb.toml'}:5: "
    if frontend_channel == "native":
        assert problems(good) == []
        (message,) = problems(bad)
        assert message.startswith(at_line) and f"{bad}: line 2: a key of 32 bytes" in message, message
    else:
        (message,) = problems(good)
        assert message.startswith(f"{at_line}this build serves TLS with Python's ssl"), message


@pytest.mark.parametrize(("prefer_client", "expected"), [(False, "AES128"), (True, "AES256")])
def test_prefer_client_ciphers_lets_the_clients_order_pick(
    tmp_path: Path, frontend_channel: str, prefer_client: bool, expected: str
) -> None:
    """`tls.prefer_client_ciphers`: a TLS 1.2 client that lists AES-256 before AES-128 gets
    AES-256; by default the server's order (AES-128 first) picks, in both kinds of context."""
    server = make_certificate(tmp_path, "a.example")
    tls = FrontendTLS(cert=[str(server.pem)], prefer_client_ciphers=prefer_client)
    context = frontend_context(tls, str(tmp_path))
    client = ssl.create_default_context(cafile=str(server.crt))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")

    async def scenario(port: int, client: ssl.SSLContext) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="a.example")
        cipher = writer.get_extra_info("cipher")
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
        writer.close()
        assert cipher[0] == f"ECDHE-ECDSA-{expected}-GCM-SHA{384 if expected == 'AES256' else 256}", cipher

    serve((context, client), scenario)


@pytest.mark.parametrize("tickets", [True, False])
def test_tickets_off_issues_none_and_a_session_resumes_by_its_id(
    tmp_path: Path, frontend_channel: str, tickets: bool
) -> None:
    """`tls.tickets`: on, a TLS 1.2 client gets a session ticket; off (SSL_OP_NO_TICKET),
    none, and its session resumes by id from the context's cache, in both kinds of context."""
    server = make_certificate(tmp_path, "a.example")
    context = frontend_context(FrontendTLS(cert=[str(server.pem)], tickets=tickets), str(tmp_path))
    client = ssl.create_default_context(cafile=str(server.crt))
    client.maximum_version = ssl.TLSVersion.TLSv1_2

    def exchange(port: int, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        """One connection (blocking: asyncio's client cannot offer a session), echoed once:
        its session and whether it was resumed."""
        sock = client.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="a.example", session=session
        )
        with sock:
            sock.sendall(b"hello")
            assert sock.recv(5) == b"hello"
            return sock.session, sock.session_reused

    async def scenario(port: int, _: ssl.SSLContext) -> None:
        session, _reused = await asyncio.to_thread(exchange, port, None)
        assert session is not None and session.has_ticket is tickets
        _, reused = await asyncio.to_thread(exchange, port, session)
        assert reused

    serve((context, client), scenario)
