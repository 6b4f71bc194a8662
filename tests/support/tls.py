"""Self-signed certificates made with the real `openssl` command, for TLS tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import require_tool

__all__ = ["Certificate", "make_certificate"]


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
