"""TLS session ticket keys, seen from outside: `balancer run -c FILE` and `openssl s_client`.

- Without `tls.ticket_keys` the master makes the keys and hands them to every worker: a
  session made on one worker resumes on the other ("Reused"), where workers making their own
  keys would resume only about half of the reconnections.
- A reload (SIGHUP) starts a new key and keeps the one before it for decrypting: a session
  made before one reload resumes after it; after a second reload it gets a full handshake,
  while a session made between the two reloads resumes.
- `tls.ticket_keys = "FILE"` (HAProxy's `tls-ticket-keys` format): two balancer processes
  ("nodes") given the same file resume each other's sessions; a node with other keys does not.
- A key file with a bad line is refused by `balancer check` and `balancer run`, naming the
  config file's line of `ticket_keys` and the key file's line.

Sessions are kept with `-sess_out`/`-sess_in`; every client sends a request and reads until
the server closes (`-ign_eof`), since TLS 1.3 tickets arrive after the handshake.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support import TaggedBackend, run_balancer
from tests.support.ports import free_ports
from tests.support.site import Site
from tests.support.tls import (
    Certificate,
    assert_every_reconnection_resumes,
    connect,
    http_get,
    make_certificate,
    openssl_client,
    reload,
    session_text,
    tls_site_config,
    worker_of,
)
from tests.support.tools import require_built

from balancer.net import tls as tls_module

pytestmark = pytest.mark.e2e
require_built(tls_module._tls, "net/_tls")  # Python's ssl cannot set ticket keys

NAME = "t.example.test"
VERSIONS = ["-tls1_2", "-tls1_3"]


# -- helpers -------------------------------------------------------------------------------


def new_session(port: int, version: str, session: Path, path: str) -> None:
    """A full handshake whose session (with its ticket) is saved to `session`."""
    assert connect(port, version, NAME, path, "-sess_out", str(session)) == "New"
    assert session.is_file() and session.stat().st_size > 0, f"openssl saved no session for {path}"
    text = session_text(session)
    assert "TLS session ticket:" in text, f"the session of {path} holds no ticket:\n{text}"


def resume(port: int, version: str, session: Path, path: str) -> str:
    """Present the saved `session`: "Reused" or "New"."""
    return connect(port, version, NAME, path, "-sess_in", str(session))


def random_keys(count: int) -> str:
    """A `tls.ticket_keys` file's text: `count` keys of 80 random bytes, as
    `openssl rand 80 | openssl base64 -A` makes them."""
    return "".join(base64.b64encode(os.urandom(80)).decode() + "\n" for _ in range(count))


def config(site: Site, cert: Certificate, web: TaggedBackend, workers: int, ticket_keys: str = "") -> str:
    """One TLS frontend in front of `web`; the access log names the worker (`%pid`) of each path."""
    keys_line = f'ticket_keys = "{ticket_keys}"\n' if ticket_keys else ""
    workers_lines = f'workers = {workers}\nlog_format = "%pid %HU %ST"\n'
    return tls_site_config(site, cert.pem, web, global_lines=workers_lines, tls_lines=keys_line)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(module_dir: Path) -> Certificate:
    return make_certificate(module_dir / "certs", NAME)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str], Site]]:
    """Factory: `nodes("node1")` -> a Site of its own in tmp_path/node1, stopped at teardown."""
    made: list[Site] = []

    def make(name: str) -> Site:
        made.append(Site(tmp_path / name))
        return made[-1]

    yield make
    for site in made:
        site.stop()


# -- the master's keys, shared by its workers ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_resumes_on_every_worker(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path, version: str
) -> None:
    """workers = 2, no `ticket_keys`: every reconnection resumes, and both workers served
    resumed connections (with a key per worker about half of them would be "New")."""
    site.start(config(site, cert, web, workers=2))
    session = tmp_path / "session.pem"
    new_session(site.port, version, session, "/first")
    assert_every_reconnection_resumes(
        site, lambda path: resume(site.port, version, session, path), worker_of(site, "/first")
    )


def test_a_reload_keeps_the_previous_key_for_one_generation(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path
) -> None:
    """A session made before a reload resumes after it; after a second reload it gets a
    full handshake, while a session made after the first reload still resumes."""
    process = site.start(config(site, cert, web, workers=2))
    before = {version: tmp_path / f"before{version}.pem" for version in VERSIONS}
    between = {version: tmp_path / f"between{version}.pem" for version in VERSIONS}
    for version in VERSIONS:
        new_session(site.port, version, before[version], f"/before/{version}")

    reload(process, generation=2, workers=2)
    for version in VERSIONS:
        assert resume(site.port, version, before[version], f"/before/{version}/after-1") == "Reused", version
        new_session(site.port, version, between[version], f"/between/{version}")

    reload(process, generation=3, workers=2)
    for version in VERSIONS:
        assert resume(site.port, version, before[version], f"/before/{version}/after-2") == "New", version
        assert resume(site.port, version, between[version], f"/between/{version}/after-2") == "Reused", version


# -- a ticket_keys file shared by nodes ------------------------------------------------------


def test_nodes_with_one_keys_file_resume_each_others_sessions(
    nodes: Callable[[str], Site], cert: Certificate, web: TaggedBackend, tmp_path: Path
) -> None:
    """Two balancer processes (two ports) whose `ticket_keys` name one file of 3 keys resume
    each other's sessions; a third whose file holds other keys gives a full handshake."""
    shared = tmp_path / "ticket.keys"
    shared.write_text(random_keys(3))
    node1, node2, other = nodes("node1"), nodes("node2"), nodes("other")
    node1.start(config(node1, cert, web, workers=2, ticket_keys="../ticket.keys"))
    node2.start(config(node2, cert, web, workers=1, ticket_keys="../ticket.keys"))
    (other.dir / "ticket.keys").write_text(random_keys(3))
    other.start(config(other, cert, web, workers=1, ticket_keys="ticket.keys"))

    for version in VERSIONS:
        from_node1 = tmp_path / f"node1{version}.pem"
        from_node2 = tmp_path / f"node2{version}.pem"
        new_session(node1.port, version, from_node1, f"/node1/{version}")
        new_session(node2.port, version, from_node2, f"/node2/{version}")

        assert resume(node2.port, version, from_node1, f"/node1/{version}/on-node2") == "Reused", version
        assert resume(node1.port, version, from_node2, f"/node2/{version}/on-node1") == "Reused", version
        assert resume(other.port, version, from_node1, f"/node1/{version}/on-other") == "New", version


# -- a bad key file is refused ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize(
    ("bad_line", "why"),
    [
        (base64.b64encode(os.urandom(32)).decode(), "a key of 32 bytes"),
        ("this is not base64!", "not base64"),
    ],
    ids=["32-bytes", "not-base64"],
)
def test_a_bad_key_is_refused_with_both_lines(
    tmp_path: Path, cert: Certificate, web: TaggedBackend, command: str, bad_line: str, why: str
) -> None:
    site = Site(tmp_path)
    (tmp_path / "ticket.keys").write_text(f"{random_keys(1)}{bad_line}\n{random_keys(1)}")
    text = config(site, cert, web, workers=1, ticket_keys="ticket.keys")
    site.config_path.write_text(text)
    keys_line = text.splitlines().index('ticket_keys = "ticket.keys"') + 1

    result = run_balancer(command, "-c", site.config_path.name, cwd=tmp_path, timeout=20)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    match = re.search(rf"^.*{site.config_path.name}:{keys_line}: .*$", output, re.M)
    assert match, f"no {site.config_path.name}:{keys_line}: in:\n{output}"
    assert "ticket.keys" in match[0] and "line 2" in match[0] and why in match[0], match[0]


# -- a session is bound to its frontend -------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_session_does_not_resume_on_a_frontend_that_verifies_clients(
    site: Site, cert: Certificate, web: TaggedBackend, tmp_path: Path, version: str
) -> None:
    """Frontends share the master's ticket keys, not their sessions: a session made on a
    frontend that asks for no client certificate is not resumed by one that requires one
    (that would skip its check), while it resumes on its own frontend."""
    (verified_port,) = free_ports(1)
    site.start(
        config(site, cert, web, workers=1)
        + f"""
[[frontend]]
name = "verified"
bind = ["127.0.0.1:{verified_port}"]
default_backend = "web"

[frontend.tls]
cert = ["{cert.pem}"]
client_ca = "{cert.crt}"
verify_client = "required"
""",
        ports=[site.port, verified_port],
    )
    session = tmp_path / "session.pem"
    new_session(site.port, version, session, "/open")
    assert resume(site.port, version, session, "/open/again") == "Reused"
    elsewhere = openssl_client(
        verified_port, version, "-servername", NAME, "-sess_in", str(session), send=http_get(NAME, "/verified")
    )
    assert not re.search(r"^Reused,", elsewhere, re.M), elsewhere[-2000:]
    assert "HTTP/1.1 200" not in elsewhere, "served without the client certificate it requires"
