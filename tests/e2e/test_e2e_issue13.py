"""Issue #13 features through a real `balancer run` process and real clients: Basic auth
with curl (401 then 200), a TLS certificate directory (HAProxy `crt DIR`) chosen by SNI."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tests.support import TaggedBackend
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.site import Site
from tests.support.tls import make_certificate
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e


def test_curl_gets_401_without_credentials_and_200_with_them(site: Site):
    password_hash = subprocess.run(
        [require_tool("openssl"), "passwd", "-6", "-salt", "e2esalt", "hunter2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with TaggedBackend("app") as app:
        site.start(
            site.global_toml(log_format="json")
            + f'[[userlist]]\nname = "ops"\nuser = [{{ name = "ann", password_hash = "{password_hash}" }}]\n\n'
            + f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "app"\n'
            + '[[frontend.rule]]\nunless = { http_auth = "ops" }\naction = "auth"\nrealm = "Ops"\n\n'
            + '[[backend]]\nname = "app"\n'
            + server_blocks([app])
        )
        anonymous = curl(site.url("/secret"))
        wrong = curl("-u", "ann:wrong", site.url("/secret"))
        good = curl("-u", "ann:hunter2", site.url("/secret"))
    assert anonymous.status == 401 and wrong.status == 401
    assert anonymous.headers["www-authenticate"] == 'Basic realm="Ops"'
    assert good.status == 200 and good.headers["server-name"] == "app"
    site.wait_json_log(lambda line: line["status"] == 401 and line["termination"].startswith("PR"))


def _served_subject(port: int, name: str) -> str:
    done = subprocess.run(
        [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name],
        input="",
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    match = re.search(r"^subject=(.*)$", done.stdout, re.M)
    assert match, done.stdout[-2000:] + done.stderr[-2000:]
    return match[1]


def test_a_certificate_directory_serves_each_name_by_sni(site: Site, tmp_path: Path):
    certs = tmp_path / "certs"
    make_certificate(certs, "a.example.test", stem="10-a")
    make_certificate(certs, "b.example.test", key="rsa", stem="20-b")
    with TaggedBackend("app") as app:
        site.start(
            site.global_toml()
            + f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "app"\n'
            + f'tls = {{ cert = ["{certs}"] }}\n\n[[backend]]\nname = "app"\n'
            + server_blocks([app])
        )
        a = _served_subject(site.port, "a.example.test")
        b = _served_subject(site.port, "b.example.test")
        unknown = _served_subject(site.port, "nobody.example.test")
        through = curl(
            "-k", "--resolve", f"b.example.test:{site.port}:127.0.0.1", f"https://b.example.test:{site.port}/"
        )
    assert "a.example.test" in a and "b.example.test" in b
    assert "a.example.test" in unknown, "the first file by name is the default"
    assert through.status == 200
