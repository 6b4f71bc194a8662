"""TLS tests with the real `openssl` command: self-signed certificates, `openssl s_client`
connections that report a full handshake or a resumed session, and, for e2e tests of
sessions, the worker that served a request and a reload that waits for the old workers."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.backends import TaggedBackend
from tests.support.config import server_blocks
from tests.support.process import BalancerProcess, wait_until
from tests.support.site import Site
from tests.support.tools import require_tool

__all__ = [
    "HANDSHAKE",
    "Certificate",
    "connect",
    "http_get",
    "make_certificate",
    "openssl_client",
    "reload",
    "tls_site_config",
    "worker_of",
]

HANDSHAKE = re.compile(r"^(New|Reused), (TLSv1\.[23]),", re.M)


def tls_site_config(site: Site, pem: Path, web: TaggedBackend, *, global_lines: str = "", tls_lines: str = "") -> str:
    """`site`'s config: one frontend "tls" on its port with the certificate `pem`, in front of
    `web`, its access log in the site's file. `global_lines` and `tls_lines` (TOML lines, each
    ending with a newline) are added to [global] and to [frontend.tls]."""
    return f"""\
[global]
grace = "2s"
log = "file:{site.log_path}"
{global_lines}
[[frontend]]
name = "tls"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"

[frontend.tls]
cert = ["{pem}"]
{tls_lines}
[[backend]]
name = "web"
{server_blocks([web])}
"""


@dataclass(frozen=True)
class Certificate:
    """`pem` holds certificate + key (what a frontend's `tls.cert` takes); `crt` the
    certificate alone (what a client trusts)."""

    name: str
    pem: Path
    crt: Path
    key: Path


def make_certificate(
    directory: Path, name: str, *, key: str = "ec", organization: str = "", stem: str = "", days: int = 30
) -> Certificate:
    """A self-signed leaf for DNS name `name` (subjectAltName and CN), CA:FALSE.

    `key` is "ec" (ECDSA P-256) or "rsa" (RSA-2048). `organization` adds O=... to the
    subject, to tell two certificates for one name apart. Files are `STEM.pem/.crt/.key`.
    """
    openssl = require_tool("openssl")
    stem = stem or name
    directory.mkdir(parents=True, exist_ok=True)
    crt, key_path, pem = directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.pem"
    if key == "ec":
        key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    elif key == "rsa":
        key_args = ["-newkey", "rsa:2048"]
    else:
        raise ValueError(f"key must be 'ec' or 'rsa', not {key!r}")
    subject = f"/CN={name}" + (f"/O={organization}" if organization else "")
    command = [
        openssl,
        "req",
        "-x509",
        *key_args,
        "-nodes",
        "-keyout",
        str(key_path),
        "-out",
        str(crt),
        "-days",
        str(days),
        "-subj",
        subject,
        "-addext",
        f"subjectAltName=DNS:{name}",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl req failed ({done.returncode}): {done.stderr}")
    pem.write_bytes(crt.read_bytes() + key_path.read_bytes())
    return Certificate(name, pem, crt, key_path)


def openssl_client(port: int, *args: str, send: str = "", timeout: float = 15) -> str:
    """`openssl s_client -connect 127.0.0.1:PORT ARGS`; stdout + stderr. Its stdin is
    closed at once, or with `send` it sends that and reads until the server closes (-ign_eof):
    a TLS 1.3 session ticket comes after the handshake, so only then is it certain to be read."""
    openssl = require_tool("openssl")
    done = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", *(("-ign_eof",) if send else ()), *args],
        input=send,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return f"exit={done.returncode}\n{done.stdout}\n{done.stderr}"


def session_text(session: Path) -> str:
    """`openssl sess_id -text` of a session `openssl s_client -sess_out` saved."""
    text = subprocess.run(
        [require_tool("openssl"), "sess_id", "-in", str(session), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    ).stdout
    assert "Session-ID: " in text, f"not a session: {session}\n{text}"
    return text


def http_get(name: str, path: str) -> str:
    """GET `path` from host `name`, closing the connection after the answer."""
    return f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"


def connect(port: int, version: str, name: str, path: str, *session_args: str) -> str:
    """One connection (SNI `name`) that sends GET `path`: "New" (full handshake) or "Reused"
    (resumed). Fails unless the handshake completed in `version` and the request was answered."""
    output = openssl_client(port, version, "-servername", name, *session_args, send=http_get(name, path))
    match = HANDSHAKE.search(output)
    assert match, f"no completed handshake for {path}:\n{output[-2000:]}"
    assert match[2] == version.replace("-tls1_", "TLSv1."), output[-2000:]
    assert "HTTP/1.1 200" in output, f"no answer to {path}:\n{output[-2000:]}"
    return match[1]


def worker_of(site: Site, path: str) -> str:
    """The pid of the worker that served `path`, from an access log written with
    `log_format = "%pid %HU %ST"`."""
    line = site.wait_log(lambda text: text.split()[1:2] == [path], what=f"the request {path}")
    fields = line.split()
    assert fields[2] == "200", line
    return fields[0]


def assert_every_reconnection_resumes(site: Site, resume: Callable[[str], str], first_worker: str) -> None:
    """Reconnect with a saved session (`resume(path)`: "Reused" or "New") at least 12 times,
    and more (at most 40, 20 s) until a second worker of `site` has served one (besides
    `first_worker`, that of the session's first connection): every one resumed, and two
    workers served them (one alone would test nothing shared)."""
    workers = {first_worker}
    outcomes: list[str] = []
    deadline = time.monotonic() + 20
    while len(outcomes) < 12 or (len(workers) < 2 and len(outcomes) < 40 and time.monotonic() < deadline):
        path = f"/again/{len(outcomes)}"
        outcomes.append(resume(path))
        workers.add(worker_of(site, path))
    full = outcomes.count("New")
    assert full == 0, f"{full} of {len(outcomes)} reconnections were full handshakes: {outcomes}"
    assert len(workers) == 2, f"one worker served all {len(outcomes) + 1} connections: nothing was tested"


def reload(process: BalancerProcess, generation: int, workers: int) -> None:
    """SIGHUP; return once `generation` serves and every worker of the one before has exited
    (so no connection can reach a worker holding the previous generation's TLS state)."""
    process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: f"reload complete: generation {generation}" in process.output(),
        timeout=20,
        what=f"reload complete: generation {generation}",
    )
    exited = re.compile(rf"worker exited: pid=\d+ generation={generation - 1}\b")
    wait_until(
        lambda: len(exited.findall(process.output())) >= workers,
        timeout=15,
        what=f"the {workers} workers of generation {generation - 1} to exit",
    )
