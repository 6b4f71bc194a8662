"""OCSP stapling, seen from outside: a certificate file `CERT` with a `CERT.ocsp` beside it
(HAProxy's convention) has that response stapled for every client that asks
(`openssl s_client -status`); a response that is not for the certificate, says "revoked",
or is not an OCSP response at all is refused by `balancer check` at the line of `cert`,
naming the `.ocsp` file. The CA, the certificate and the responses are made here with
`openssl ca`-style index files and `openssl ocsp`, as an operator's responder makes them."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
from tests.support import TaggedBackend, require_tool, run_balancer
from tests.support.site import Site
from tests.support.tls import openssl_client, tls_site_config
from tests.support.tools import require_built

from balancer.net import tls as tls_module

pytestmark = pytest.mark.e2e
require_built(tls_module._tls, "net/_tls")  # Python's ssl cannot staple

NAME = "o.example.test"


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run([require_tool("openssl"), *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def make_ca_and_site(folder: Path, name: str) -> Path:
    """A CA and a certificate for `name` it signed, in `folder`: `site.pem` holds the
    certificate, then the CA's (its chain), then the key. Returns site.pem."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca = ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=Test OCSP CA"]
    openssl("req", "-x509", *ec, *ca, cwd=folder)
    openssl("req", *ec, "-keyout", "site.key", "-out", "site.csr", "-subj", f"/CN={name}", cwd=folder)
    (folder / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")
    openssl(
        "x509", "-req", "-in", "site.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "site.crt", "-days", "2", "-extfile", "san.ext", cwd=folder,
    )  # fmt: skip
    pem = folder / "site.pem"
    pem.write_text("".join((folder / part).read_text() for part in ("site.crt", "ca.crt", "site.key")))
    return pem


def make_ocsp_response(folder: Path, status: str, out: Path) -> None:
    """The CA's OCSP response about site.crt, saying `status` ("V" valid or "R" revoked), to `out`."""
    serial = openssl("x509", "-in", "site.crt", "-noout", "-serial", cwd=folder).strip().split("=")[1]
    expiry = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).strftime("%y%m%d%H%M%SZ")
    revoked = datetime.datetime.now(datetime.UTC).strftime("%y%m%d%H%M%SZ") if status == "R" else ""
    (folder / "index.txt").write_text(f"{status}\t{expiry}\t{revoked}\t{serial}\tunknown\t/CN={NAME}\n")
    openssl("ocsp", "-issuer", "ca.crt", "-cert", "site.crt", "-reqout", "request.der", "-no_nonce", cwd=folder)
    openssl(
        "ocsp", "-index", "index.txt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-CA", "ca.crt",
        "-reqin", "request.der", "-respout", str(out), "-ndays", "1", cwd=folder,
    )  # fmt: skip


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_the_response_beside_the_certificate_is_stapled_for_clients_that_ask(
    tmp_path: Path, web: TaggedBackend, version: str
) -> None:
    pem = make_ca_and_site(tmp_path / "pki", NAME)
    make_ocsp_response(tmp_path / "pki", "V", Path(f"{pem}.ocsp"))
    site = Site(tmp_path / "site")
    try:
        site.start(tls_site_config(site, pem, web))
        asked = openssl_client(site.port, version, "-servername", NAME, "-status")
        assert "OCSP Response Status: successful (0x0)" in asked, asked[-2500:]
        assert "Cert Status: good" in asked, asked[-2500:]
    finally:
        site.stop()


@pytest.mark.parametrize(
    ("response", "why"),
    [
        ("revoked", "it says the certificate is revoked"),
        ("garbage", "not a successful OCSP response"),
        ("other", "not about this certificate"),
    ],
)
def test_a_response_that_cannot_be_stapled_is_refused_at_the_cert_line(
    tmp_path: Path, web: TaggedBackend, response: str, why: str
) -> None:
    pem = make_ca_and_site(tmp_path / "pki", NAME)
    ocsp = Path(f"{pem}.ocsp")
    if response == "revoked":
        make_ocsp_response(tmp_path / "pki", "R", ocsp)
    elif response == "garbage":
        ocsp.write_bytes(b"not DER at all")
    else:  # a good response about another certificate of another CA
        make_ca_and_site(tmp_path / "other", "x.example.test")
        make_ocsp_response(tmp_path / "other", "V", ocsp)
    site = Site(tmp_path / "site")
    text = tls_site_config(site, pem, web)
    site.config_path.write_text(text)
    cert_line = text.splitlines().index(f'cert = ["{pem}"]') + 1

    result = run_balancer("check", "-c", str(site.config_path), timeout=20)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{site.config_path.name}:{cert_line}: " in output, output
    assert f"{ocsp}: " in output and why in output, output
