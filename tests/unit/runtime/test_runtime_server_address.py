"""ServerRuntime.numeric: which servers net.plain_connect may connect without a resolver."""

from __future__ import annotations

import pytest

from balancer.config.model import Server
from balancer.runtime.state import ServerRuntime


@pytest.mark.parametrize(
    ("address", "numeric"),
    [
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("[2001:db8::7]:443", True),
        ("localhost:8080", False),  # a name: the resolver's
        ("web-1.internal:80", False),
        ("[fe80::1%eth0]:80", False),  # a zone: the resolver finds its scope
        ("unix:/run/app.sock", False),
    ],
)
def test_numeric_is_a_plain_ip_address(address: str, numeric: bool) -> None:
    assert ServerRuntime(Server(name="s", address=address), "web").numeric is numeric
