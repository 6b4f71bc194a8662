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

import importlib.util
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import TaggedBackend, require_tool
from tests.support.config import server_blocks
from tests.support.site import Site
from tests.support.tls import Certificate, connect, make_certificate, reload, worker_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("balancer.net._tls") is None,
        reason="net/_tls.c is not built here (BALANCER_PURE=1): Python's ssl keeps each worker's own cache",
    ),
]

NAME = "s.example.test"
VERSIONS = ["-tls1_2", "-tls1_3"]


# -- helpers -------------------------------------------------------------------------------


def config(site: Site, cert: Certificate, web: TaggedBackend, workers: int, cache: int | None = None) -> str:
    """One TLS frontend without tickets in front of `web`, `tls_session_cache = cache` unless
    None (the default); the access log names the worker (`%pid`) of each path."""
    cache_line = f"tls_session_cache = {cache}\n" if cache is not None else ""
    return f"""\
[global]
workers = {workers}
grace = "2s"
log = "file:{site.log_path}"
log_format = "%pid %HU %ST"
{cache_line}
[[frontend]]
name = "tls"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"

[frontend.tls]
cert = ["{cert.pem}"]
tickets = false

[[backend]]
name = "web"
{server_blocks([web])}
"""


def ticket_length(session: Path) -> int | None:
    """The length in bytes of the ticket in a session `openssl s_client -sess_out` saved;
    None when it holds none."""
    text = subprocess.run(
        [require_tool("openssl"), "sess_id", "-in", str(session), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    ).stdout
    assert "Session-ID: " in text, f"not a session: {session}\n{text}"
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


@pytest.fixture(scope="module")
def web() -> Iterator[TaggedBackend]:
    with TaggedBackend("web") as backend:
        yield backend


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
    workers = {worker_of(site, "/first")}

    # At least 12 reconnections; more (up to 40, 20 s) until both workers have served one.
    outcomes: list[str] = []
    deadline = time.monotonic() + 20
    while len(outcomes) < 12 or (len(workers) < 2 and len(outcomes) < 40 and time.monotonic() < deadline):
        path = f"/again/{len(outcomes)}"
        outcomes.append(resume(site.port, version, session, path))
        workers.add(worker_of(site, path))

    full = outcomes.count("New")
    assert full == 0, f"{full} of {len(outcomes)} reconnections were full handshakes: {outcomes}"
    assert len(workers) == 2, f"one worker served all {len(outcomes) + 1} connections: nothing was tested"


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
