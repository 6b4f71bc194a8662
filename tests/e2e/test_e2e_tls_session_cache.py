"""The TLS session cache the workers share, seen from outside: `balancer run -c FILE` and
`openssl s_client`, with `[frontend.tls] tickets = false` (no stateless tickets).

Without tickets a session is resumed from the server's cache: by its id in TLS 1.2, by a
ticket that only names it in TLS 1.3.

- The master makes one cache in shared memory that every worker uses: with 2 workers a
  session made on one resumes on the other, every reconnection "Reused".
- `[global] tls_session_cache = 0` gives each worker OpenSSL's own cache instead: a
  reconnection that lands on the other worker is a full handshake ("New"). This is the control
  that shows the first test can fail.
- The cache is kept across reloads (SIGHUP): a session made before one resumes after it, and
  after a second one too (ticket keys, by contrast, keep one generation).

Sessions are kept with `-sess_out`/`-sess_in`; every client sends a request and reads until
the server closes (`-ign_eof`), since TLS 1.3 tickets arrive after the handshake. A TLS 1.3
resumption brings a new ticket (a new session in the cache): a reconnection presents the
saved session and saves the new one (`-sess_in FILE -sess_out FILE`), as a browser does.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import TaggedBackend, wait_until
from tests.support.ports import free_ports
from tests.support.site import Site
from tests.support.tls import (
    Certificate,
    assert_every_reconnection_resumes,
    connect,
    http_get,
    make_certificate,
    reload,
    session_text,
    tls_site_config,
    worker_of,
)
from tests.support.tools import require_built

from balancer.net import tls as tls_module

pytestmark = pytest.mark.e2e
require_built(tls_module._tls, "net/_tls")  # Python's ssl keeps each worker's own cache

NAME = "s.example.test"
VERSIONS = ["-tls1_2", "-tls1_3"]


# -- helpers -------------------------------------------------------------------------------


def config(site: Site, cert: Certificate, web: TaggedBackend, workers: int, cache: int | None = None) -> str:
    """One TLS frontend without tickets in front of `web`, `tls_session_cache = cache` unless
    None (the default); the access log names the worker (`%pid`) of each path."""
    cache_line = f"tls_session_cache = {cache}\n" if cache is not None else ""
    global_lines = f'workers = {workers}\nlog_format = "%pid %HU %ST"\n{cache_line}'
    return tls_site_config(site, cert.pem, web, global_lines=global_lines, tls_lines="tickets = false\n")


def ticket_length(session: Path) -> int | None:
    """The length in bytes of the ticket in a session `openssl s_client -sess_out` saved;
    None when it holds none."""
    text = session_text(session)
    if "TLS session ticket:" not in text:
        return None
    dump = text.split("TLS session ticket:", 1)[1]
    rows = re.findall(r"^\s+[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -])+)", dump, re.M)
    return sum(len(re.findall(r"[0-9a-f]{2}", row)) for row in rows)


def new_session(port: int, version: str, session: Path, path: str) -> None:
    """A full handshake whose session is saved to `session`. `tickets = false` is in force:
    a TLS 1.2 session holds no ticket (it resumes by its id), a TLS 1.3 one a ticket of at
    most 32 bytes that only names the session in the server's cache (a stateless ticket,
    the session encrypted, is well over 100)."""
    assert connect(port, version, NAME, path, "-sess_out", str(session)) == "New"
    assert session.is_file() and session.stat().st_size > 0, f"openssl saved no session for {path}"
    length = ticket_length(session)
    if version == "-tls1_2":
        assert length is None, f"the TLS 1.2 session of {path} holds a ticket of {length} bytes"
    else:
        assert length is not None and 0 < length <= 32, f"the TLS 1.3 session of {path}: a ticket of {length} bytes"


def resume(port: int, version: str, session: Path, path: str) -> str:
    """Present the saved `session` and save the one the server gives back (in TLS 1.3 a new
    ticket each time): "Reused" or "New"."""
    return connect(port, version, NAME, path, "-sess_in", str(session), "-sess_out", str(session))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(module_dir: Path) -> Certificate:
    return make_certificate(module_dir / "certs", NAME)


# -- one cache for every worker ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_resumes_on_every_worker(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path, version: str
) -> None:
    """workers = 2, tickets off, the default cache: every reconnection resumes, and both
    workers served reconnections (with a cache per worker about half would be "New")."""
    site.start(config(site, cert, web, workers=2))
    session = tmp_path / "session.pem"
    new_session(site.port, version, session, "/first")
    assert_every_reconnection_resumes(
        site, lambda path: resume(site.port, version, session, path), worker_of(site, "/first")
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_without_the_shared_cache_the_other_worker_gives_a_full_handshake(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path, version: str
) -> None:
    """`tls_session_cache = 0` (each worker its own cache): the first reconnection that lands
    on the worker that did not make the session is a full handshake."""
    site.start(config(site, cert, web, workers=2, cache=0))
    session = tmp_path / "session.pem"
    new_session(site.port, version, session, "/first")
    maker = worker_of(site, "/first")

    # Reconnect (up to 40 times, 20 s) until one lands on the other worker.
    outcomes: list[tuple[str, str]] = []
    deadline = time.monotonic() + 20
    while len(outcomes) < 40 and time.monotonic() < deadline:
        path = f"/again/{len(outcomes)}"
        outcome = resume(site.port, version, session, path)
        outcomes.append((worker_of(site, path), outcome))
        if outcomes[-1][0] != maker:
            break

    elsewhere = [outcome for worker, outcome in outcomes if worker != maker]
    assert elsewhere, f"worker {maker} served all {len(outcomes) + 1} connections: nothing was tested"
    assert elsewhere == ["New"], f"made on {maker}; (worker, outcome) of the reconnections: {outcomes}"


# -- kept across reloads ---------------------------------------------------------------------


def test_a_session_made_before_reloads_resumes_after_them(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path
) -> None:
    """Tickets off: a session made before a reload resumes after it, and after a second reload
    too (the master keeps its cache; the new workers are given the same one)."""
    process = site.start(config(site, cert, web, workers=2))
    sessions = {version: tmp_path / f"session{version}.pem" for version in VERSIONS}
    for version in VERSIONS:
        new_session(site.port, version, sessions[version], f"/before/{version}")

    for generation in (2, 3):
        reload(process, generation=generation, workers=2)
        for version in VERSIONS:
            path = f"/{version}/after-{generation - 1}"
            assert resume(site.port, version, sessions[version], path) == "Reused", (version, generation)


# -- many clients at once --------------------------------------------------------------------

CLIENTS = 16
ROUNDS = 6


def one_client(port: int, context: ssl.SSLContext, number: int) -> list[bool]:
    """A client that makes a session, then reconnects ROUNDS times with the last session it
    got (Python's ssl): for each reconnection, whether it resumed."""
    session: ssl.SSLSession | None = None
    reused: list[bool] = []
    for attempt in range(ROUNDS + 1):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname=NAME, session=session) as tls:
            tls.sendall(http_get(NAME, f"/client/{number}/{attempt}").encode())
            answer = b""
            while chunk := tls.recv(65536):  # to the close: a TLS 1.3 ticket comes after the handshake
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            if attempt:
                reused.append(tls.session_reused)
            session = tls.session
    return reused


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sixteen_clients_at_once_resume_every_time(
    site: Site, cert: Certificate, web: TaggedBackend, version: ssl.TLSVersion
) -> None:
    """16 clients reconnecting at once over 2 workers, each resuming its own session 6 times:
    every worker writes the cache while the other reads it, and every reconnection resumes."""
    (admin_port,) = free_ports(1)
    site.start(config(site, cert, web, workers=2) + f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n')
    context = ssl.create_default_context(cafile=str(cert.crt))
    context.minimum_version = context.maximum_version = version

    def logged() -> list[str]:
        return [line for line in site.log_lines() if "/client/" in line]

    # A burst may all land on one worker (the one awake): more bursts, at most 4, until both served.
    full, served, workers = 0, 0, set()
    for _ in range(4):
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda number: one_client(site.port, context, number), range(CLIENTS)))
        full += sum(not reused for client in results for reused in client)
        served += CLIENTS * (ROUNDS + 1)
        wait_until(lambda expected=served: len(logged()) >= expected, timeout=5, what=f"the {served} access lines")
        workers = {line.split()[0] for line in logged()}
        if len(workers) == 2:
            break
    assert full == 0, f"{full} of {served - served // (ROUNDS + 1)} reconnections were full handshakes"
    # What an operator sees of it: every handshake counted, all but each client's first resumed.
    resumed = served - served // (ROUNDS + 1)

    def counted() -> tuple[float, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("frontend") == "tls"
        }
        return samples["balancer_frontend_tls_handshakes_total"], samples["balancer_frontend_tls_resumed_total"]

    wait_until(lambda: counted() == (served, resumed), timeout=10, what=f"{served} handshakes, {resumed} resumed")
    assert len(workers) == 2, "one worker served every connection: nothing was shared"
