"""Listeners as an operator sets them up: the listen backlog, and IPv6 on both sides."""

from __future__ import annotations

import signal
import subprocess

import pytest
from tests.support import TaggedBackend, require_tool, wait_until
from tests.support.site import Site

pytestmark = pytest.mark.e2e


def _listen_queue(port: int) -> int:
    """The accept queue size the kernel gives the socket listening on `port` (ss: Send-Q)."""
    ss = require_tool("ss")
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    sizes = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(sizes) == 1, out
    return sizes.pop()


def test_the_frontend_backlog_sizes_the_listen_queue_and_a_reload_changes_it(site: Site, tagged) -> None:
    (s1,) = tagged("s1")
    template = (
        site.global_toml()
        + '[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{port}"]\ndefault_backend = "web"\nbacklog = {backlog}\n'
        + f'[[backend]]\nname = "web"\n[[backend.server]]\nname = "s1"\naddress = "{s1.address}"\n'
    )
    proc = site.start(template.format(port=site.port, backlog=17))
    assert _listen_queue(site.port) == 17
    site.config_path.write_text(template.format(port=site.port, backlog=33))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _listen_queue(site.port) == 33, timeout=10, what="the new backlog after the reload")


def test_an_ipv6_listener_in_front_of_an_ipv6_server(site: Site) -> None:
    """A frontend on [::1] in front of a server on [::1]: the client's IPv6 address reaches
    the server in X-Forwarded-For and the access log."""
    curl = require_tool("curl")
    with TaggedBackend("v6", host="::1") as server:
        proc = site.start(
            site.global_toml()
            + f'[[frontend]]\nname = "www"\nbind = ["[::1]:{site.port}"]\ndefault_backend = "web"\n'
            + f'[[backend]]\nname = "web"\n[[backend.server]]\nname = "v6"\naddress = "{server.address}"\n',
            ports=[],
        )
        proc.wait_ready(site.port, host="::1")
        result = subprocess.run(
            [curl, "-s", "-w", " %{http_code}", f"http://[::1]:{site.port}/v6"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.stdout == "v6\n 200", result
        assert server.requests[-1].header("X-Forwarded-For") == "::1"
        line = site.wait_log(lambda text: "/v6" in text, what="the access line")
        assert line.startswith("::1:"), line
