"""Every configuration in examples/ passes `balancer check`, and runs as documented.

Each example is run as a real `balancer run -c FILE` process in front of real servers and
checked the way its README tells an operator to check it, with curl:

- haproxy-lab: requests are balanced over web1 and web2; X-Forwarded-For reaches the server
  and the client's address is in the access log (with `xff=` when the client sent one); the
  SERVERID cookie pins a client; a killed server is taken down by the HTTP check and gets no
  more requests (its pinned client moves); the stats page answers 401 without the login and
  200 with it.
- l4-l7-routing: /blog goes to the blog server, the rest is balanced over web1 and web2; the
  TCP frontend relays connections to both, untouched (no X-Forwarded-For, no /blog routing).
- tls-offload-tiers: curl over TLS to tier 1 reaches a server through tier 2; tier 2's access
  log shows the client's own address and port (from PROXY v2) and X-Forwarded-For has it;
  a keep-alive client's requests share one connection through both tiers; tier 1's
  connections to tier 2 leave from more than one source address and reach more than one of
  tier 2's binds (`ss`, as an operator would look).

The examples use fixed ports for readability (8080, 8081, ...). Before running one, the test
copies its folder and replaces every `:PORT"` in the files by a free port (`localize`), so
that it cannot collide with anything else on the machine; addresses stay as written. The
TLS example's certificate is made with openssl, as examples/README.md says (nothing with a
private key is in the repository).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import BalancerProcess, TaggedBackend, free_port, run_balancer, wait_until
from tests.support.curl import CurlResult, curl, curl_raw
from tests.support.server_process import ServerProcess
from tests.support.tls import make_certificate
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.rglob("*.toml"))

_PORT_IN_STRING = re.compile(r':(\d+)"')


def localize(text: str, ports: dict[int, int]) -> str:
    """`text` with every `:PORT"` (a port at the end of a TOML address string) outside comments replaced by
    `ports[PORT]`. A port the test did not map is an error, so an example that gains a
    listener or a server cannot silently keep a fixed port in the test."""

    def replace(match: re.Match[str]) -> str:
        port = int(match[1])
        if port not in ports:
            raise AssertionError(f"the test maps no free port for :{port} of the example")
        return f':{ports[port]}"'

    # Comments keep their ports: they explain the example as shipped. (No string of the
    # examples holds a "#".)
    out = []
    for line in text.splitlines(keepends=True):
        code, hash_sign, comment = line.partition("#")
        out.append(_PORT_IN_STRING.sub(replace, code) + hash_sign + comment)
    return "".join(out)


def copy_example(name: str, directory: Path, ports: dict[int, int]) -> Path:
    """examples/NAME copied to `directory`, its TOML files localized; returns the copy."""
    target = directory / name
    shutil.copytree(EXAMPLES / name, target)
    for path in target.glob("*.toml"):
        path.write_text(localize(path.read_text(), ports))
    return target


def make_certificates(folder: Path) -> None:
    """The certificates the TOML files of `folder` name in `tls.cert`, made with openssl
    for the name `localhost`, as examples/README.md does (site.pem -> site.crt, site.key)."""
    for path in folder.glob("*.toml"):
        for frontend in tomllib.loads(path.read_text()).get("frontend", []):
            for cert in frontend.get("tls", {}).get("cert", []):
                make_certificate(folder, "localhost", stem=Path(cert).stem)


def access_lines(process: BalancerProcess) -> list[str]:
    """The access-log lines a `log = "stdout"` example wrote so far."""
    return [line for line in process.stdout().splitlines() if line.strip()]


def wait_access_line(process: BalancerProcess, needle: str, timeout: float = 5) -> str:
    def find() -> str | None:
        return next((line for line in access_lines(process) if needle in line), None)

    try:
        return str(wait_until(find, timeout=timeout, what=f"an access line with {needle!r}"))
    except AssertionError:
        raise AssertionError(f"no access line with {needle!r}:\n{process.output()[-3000:]}") from None


def start(config: Path, *addresses: tuple[str, int], timeout: float = 20) -> BalancerProcess:
    process = BalancerProcess(config, log_dir=config.parent / f"{config.stem}.out", cwd=config.parent)
    try:
        for host, port in addresses:
            process.wait_ready(port, timeout=timeout, host=host)
    except BaseException:
        process.kill()
        raise
    return process


def stop(process: BalancerProcess) -> None:
    try:
        process.stop(timeout=15)
    finally:
        process.kill()


def served_by(result: CurlResult) -> str:
    assert result.status == 200, (result.status, result.body, result.stderr)
    return result.headers["server-name"]


def echoed_headers(result: CurlResult) -> dict[str, list[str]]:
    """Headers the server received, from a TaggedBackend's /echo answer."""
    assert result.status == 200, (result.status, result.body, result.stderr)
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(result.body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


# -- every example passes `balancer check` --------------------------------------------------


def test_there_are_examples_for_the_scenarios() -> None:
    names = {path.relative_to(EXAMPLES).as_posix() for path in EXAMPLE_FILES}
    assert names == {
        "haproxy-lab/balancer.toml",
        "l4-l7-routing/balancer.toml",
        "tls-offload-tiers/tier1.toml",
        "tls-offload-tiers/tier2.toml",
    }


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_passes_balancer_check(example: Path, tmp_path: Path) -> None:
    """`balancer check -c` exits 0 on the file as shipped (ports untouched), once the
    certificates its README makes exist."""
    folder = tmp_path / example.parent.name
    shutil.copytree(example.parent, folder)
    make_certificates(folder)
    done = run_balancer("check", "-c", str(folder / example.name))
    assert (done.returncode, done.stdout.strip()) == (0, "configuration is valid"), done.stdout + done.stderr


def test_readme_tells_how_to_run_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for example in EXAMPLE_FILES:
        assert example.relative_to(EXAMPLES).as_posix() in readme, example


def test_no_private_key_is_committed() -> None:
    """The TLS example's README makes its key on each machine; git must never hold one
    (a key made by following the README stays untracked: the folder's .gitignore)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        [git, "ls-files", "-z", "examples"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    files = [ROOT / name.decode() for name in tracked if name]
    assert files, "no file of examples/ is tracked"
    for path in files:
        assert b"PRIVATE KEY" not in path.read_bytes(), path
    ignored = subprocess.run(
        [git, "check-ignore", "-q", "examples/tls-offload-tiers/site.pem"], cwd=ROOT, timeout=30, check=False
    )
    assert ignored.returncode == 0, "site.pem made by the README would not be ignored by git"


# -- haproxy-lab ------------------------------------------------------------------------------


@dataclass
class Lab:
    process: BalancerProcess
    port: int
    stats_port: int
    web1: ServerProcess
    web2: ServerProcess

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self, path: str = "/stats", *auth: str) -> CurlResult:
        return curl(*auth, f"http://127.0.0.1:{self.stats_port}{path}")

    def health(self, server: str) -> str:
        answer = self.stats("/stats/api", "-u", "afnog:afnog")
        assert answer.status == 200, answer.body
        rows = [row for row in json.loads(answer.body)["servers"] if row["server"] == server]
        return str(rows[0]["health"])


@contextlib.contextmanager
def running_lab(directory: Path) -> Iterator[Lab]:
    """The lab as examples/README.md runs it: two web servers (each a process of its own, so
    one can be killed), then `balancer run -c haproxy-lab/balancer.toml`."""
    port, stats_port = free_port(), free_port()
    with ServerProcess("web1") as web1, ServerProcess("web2") as web2:
        ports = {8080: port, 8404: stats_port, 8081: web1.port, 8082: web2.port}
        folder = copy_example("haproxy-lab", directory, ports)
        process = start(folder / "balancer.toml", ("127.0.0.1", port), ("127.0.0.1", stats_port))
        try:
            yield Lab(process, port, stats_port, web1, web2)
        finally:
            stop(process)


@pytest.fixture(scope="module")
def lab(module_dir: Path) -> Iterator[Lab]:
    with running_lab(module_dir / "lab") as world:
        yield world


def test_lab_balances_requests_over_both_servers(lab: Lab) -> None:
    servers = [served_by(curl(lab.url("/index2.html"))) for _ in range(6)]
    assert sorted(servers) == ["web1"] * 3 + ["web2"] * 3, servers


def test_lab_passes_the_client_address_in_x_forwarded_for_and_logs_it(lab: Lab) -> None:
    direct = f"/echo/direct-{uuid.uuid4().hex}"
    assert echoed_headers(curl(lab.url(direct)))["x-forwarded-for"] == ["127.0.0.1"]
    line = wait_access_line(lab.process, direct)
    assert line.startswith("127.0.0.1:") and " web web/web" in line, line

    # A client behind another proxy: its X-Forwarded-For is kept, ours appended, and the
    # access line shows what the client sent.
    proxied = f"/echo/proxied-{uuid.uuid4().hex}"
    answer = curl("-H", "X-Forwarded-For: 203.0.113.7", lab.url(proxied))
    assert echoed_headers(answer)["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    line = wait_access_line(lab.process, proxied)
    assert line.startswith("127.0.0.1:") and line.endswith(' xff="203.0.113.7"'), line


def test_lab_cookie_pins_a_client_to_its_server(lab: Lab, tmp_path: Path) -> None:
    jar = str(tmp_path / "cookies.txt")
    first = curl("-c", jar, "-b", jar, lab.url("/index2.html"))
    server = served_by(first)
    assert first.headers["set-cookie"].startswith(f"SERVERID={server};"), first.headers
    assert "private" in first.headers["cache-control"]
    # Round robin alone would alternate; the cookie keeps this client on its server.
    again = [served_by(curl("-c", jar, "-b", jar, lab.url("/index2.html"))) for _ in range(5)]
    assert again == [server] * 5


def test_lab_stats_page_needs_the_login(lab: Lab) -> None:
    refused = lab.stats("/stats")
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert lab.stats("/stats", "-u", "afnog:wrong").status == 401
    page = lab.stats("/stats", "-u", "afnog:afnog")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert {lab.health("web1"), lab.health("web2")} == {"up"}


def test_lab_removes_a_killed_server(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab:
        jar = str(tmp_path / "cookies.txt")
        # A client pinned to web2.
        for _ in range(4):  # a new client each time (no cookie sent); round robin: web2 within two
            if served_by(curl("-c", jar, lab.url("/"))) == "web2":
                break
        assert served_by(curl("-c", jar, "-b", jar, lab.url("/"))) == "web2"
        lab.web2.kill()
        # Right away, requests are answered by web1 (a refused connect is retried there) and
        # the client pinned to web2 moves to web1 with a new cookie.
        moved = curl("-c", jar, "-b", jar, lab.url("/"))
        assert served_by(moved) == "web1"
        assert moved.headers["set-cookie"].startswith("SERVERID=web1;")
        # The HTTP check takes web2 out of the pool (3 failed checks, 2 s apart).
        wait_until(lambda: lab.health("web2") == "down", timeout=20, what="web2 down on the stats page")
        assert wait_until(lambda: "server web/web2 is DOWN" in lab.process.output(), timeout=5)
        before = len(access_lines(lab.process))
        servers = [served_by(curl(lab.url(f"/after-{i}"))) for i in range(6)]
        assert servers == ["web1"] * 6
        wait_until(lambda: len(access_lines(lab.process)) >= before + 6, what="the six access lines")
        assert not [line for line in access_lines(lab.process)[before:] if "web/web2" in line]


# -- l4-l7-routing ----------------------------------------------------------------------------


@dataclass
class Routing:
    process: BalancerProcess
    tcp_port: int
    http_port: int
    servers: dict[str, TaggedBackend]


@pytest.fixture(scope="module")
def routing(module_dir: Path) -> Iterator[Routing]:
    tcp_port, http_port = free_port(), free_port()
    with TaggedBackend("web1") as web1, TaggedBackend("web2") as web2, TaggedBackend("blog1") as blog1:
        ports = {8000: tcp_port, 8080: http_port, 8081: web1.port, 8082: web2.port, 8083: blog1.port}
        folder = copy_example("l4-l7-routing", module_dir, ports)
        process = start(folder / "balancer.toml", ("127.0.0.1", tcp_port), ("127.0.0.1", http_port))
        try:
            yield Routing(process, tcp_port, http_port, {"web1": web1, "web2": web2, "blog1": blog1})
        finally:
            stop(process)


def test_l7_sends_blog_to_the_blog_backend(routing: Routing) -> None:
    base = f"http://127.0.0.1:{routing.http_port}"
    for path in ("/blog", "/blog/", "/blog/post-1?page=2"):
        assert served_by(curl(base + path)) == "blog1", path
    assert routing.servers["blog1"].paths[-1] == "/blog/post-1"  # the path is not rewritten
    others = [served_by(curl(f"{base}/contacts")) for _ in range(4)]
    assert sorted(others) == ["web1", "web1", "web2", "web2"]
    line = wait_access_line(routing.process, "/blog/post-1")
    assert " http blog-backend/blog1 " in line, line


def test_l4_relays_connections_to_both_servers_untouched(routing: Routing) -> None:
    base = f"http://127.0.0.1:{routing.tcp_port}"
    answers = [curl(f"{base}/echo/tcp-{i}") for i in range(4)]
    assert sorted(served_by(answer) for answer in answers) == ["web1", "web1", "web2", "web2"]
    # Bytes relayed as they are: no X-Forwarded-For added, and no path routing at L4.
    assert all("x-forwarded-for" not in echoed_headers(answer) for answer in answers)
    assert served_by(curl(f"{base}/blog/post-1")) in {"web1", "web2"}
    line = wait_access_line(routing.process, " tcp-in web-tcp/")
    assert line.endswith(' ""'), line  # a TCP line has no request


# -- tls-offload-tiers ------------------------------------------------------------------------


@dataclass
class Tiers:
    tier1: BalancerProcess
    tier2: BalancerProcess
    https_port: int
    http_port: int
    tier2_port: int
    ca_file: Path

    def curl_tls(self, *args: str) -> CurlResult:
        resolve = f"localhost:{self.https_port}:127.0.0.1"
        return curl("--resolve", resolve, "--cacert", str(self.ca_file), *args)

    def url(self, path: str) -> str:
        return f"https://localhost:{self.https_port}{path}"


TIER1_SOURCES = {"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"}
TIER2_BINDS = {"127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"}


@pytest.fixture(scope="module")
def tiers(module_dir: Path) -> Iterator[Tiers]:
    https_port, http_port, tier2_port = free_port(), free_port(), free_port()
    with TaggedBackend("web1") as web1, TaggedBackend("web2") as web2:
        ports = {8443: https_port, 8080: http_port, 8100: tier2_port, 8081: web1.port, 8082: web2.port}
        folder = copy_example("tls-offload-tiers", module_dir, ports)
        make_certificates(folder)
        binds = [(host, tier2_port) for host in sorted(TIER2_BINDS)]
        tier2 = start(folder / "tier2.toml", *binds)
        try:
            tier1 = start(folder / "tier1.toml", ("127.0.0.1", https_port), ("127.0.0.1", http_port))
            try:
                yield Tiers(tier1, tier2, https_port, http_port, tier2_port, folder / "site.crt")
            finally:
                stop(tier1)
        finally:
            stop(tier2)


def test_tls_to_tier1_reaches_a_server_with_the_client_address(tiers: Tiers, tmp_path: Path) -> None:
    path = f"/echo/tls-{uuid.uuid4().hex}"
    body = tmp_path / "body.json"
    done = curl_raw(
        "--resolve",
        f"localhost:{tiers.https_port}:127.0.0.1",
        "--cacert",
        str(tiers.ca_file),
        "-o",
        str(body),
        "-w",
        "%{http_code} %{local_port}",
        tiers.url(path),
    )
    status, local_port = done.stdout.decode().split()
    assert status == "200", done.stderr
    echo = json.loads(body.read_text())
    assert echo["server"] in {"web1", "web2"}
    assert [v for n, v in echo["headers"] if n.lower() == "x-forwarded-for"] == ["127.0.0.1"]
    # Tier 2 saw tier 1's connection (from 127.0.0.2x) but logs the client's own address and
    # port, which the PROXY v2 header carried.
    line = wait_access_line(tiers.tier2, path)
    assert line.startswith(f"127.0.0.1:{local_port} "), (line, local_port)
    assert " from-tier1 web/web" in line, line
    # Tier 1 logs the client connection it relayed (TCP mode: one line per connection).
    assert " https tier2/t2-" in wait_access_line(tiers.tier1, f"127.0.0.1:{local_port} ")


def test_plain_http_to_tier1_goes_the_same_way(tiers: Tiers) -> None:
    path = f"/plain-{uuid.uuid4().hex}"
    assert served_by(curl(f"http://127.0.0.1:{tiers.http_port}{path}")) in {"web1", "web2"}
    assert wait_access_line(tiers.tier2, path).startswith("127.0.0.1:")


def test_keep_alive_client_uses_one_connection_through_both_tiers(tiers: Tiers) -> None:
    first, second = (f"/ka-{uuid.uuid4().hex}" for _ in range(2))
    answer = tiers.curl_tls(tiers.url(first), tiers.url(second))
    servers = [headers["server-name"] for status, headers, _ in answer.finals if status == 200]
    assert sorted(servers) == ["web1", "web2"]  # each request balanced by tier 2
    clients = {wait_access_line(tiers.tier2, path).split(" ", 1)[0] for path in (first, second)}
    assert len(clients) == 1, clients  # one client connection, relayed as one to tier 2


def _tls_get(port: int, ca_file: Path, path: str) -> ssl.SSLSocket:
    """A TLS connection to tier 1 that sent one request, read its answer and stays open."""
    context = ssl.create_default_context(cafile=str(ca_file))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length, head
    while len(body) < int(length[1]):
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_tier1_spreads_connections_over_source_addresses_and_tier2_binds(tiers: Tiers) -> None:
    ss = require_tool("ss")
    with contextlib.ExitStack() as open_connections:
        for i in range(6):
            open_connections.enter_context(_tls_get(tiers.https_port, tiers.ca_file, f"/spread-{i}"))

        def pairs() -> set[tuple[str, str]]:
            shown = subprocess.run(
                [ss, "-Htn", "state", "established", f"( dport = :{tiers.tier2_port} )"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            found = set()
            for row in shown.splitlines():
                local, peer = row.split()[-2:]
                found.add((local.rsplit(":", 1)[0], peer.rsplit(":", 1)[0]))
            return found

        seen = wait_until(lambda: (found := pairs()) and len(found) >= 2 and found, what="tier-1 connections")
        sources, binds = {src for src, _ in seen}, {dst for _, dst in seen}
        assert sources <= TIER1_SOURCES and len(sources) > 1, seen
        assert binds <= TIER2_BINDS and len(binds) > 1, seen
