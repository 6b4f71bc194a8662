"""`source` lists local IP addresses; anything else is refused with its line."""

from __future__ import annotations

import pytest

from balancer.config import ConfigError, parse_config

CONFIG = """[[frontend]]
name = "www"
bind = ["127.0.0.1:8080"]
default_backend = "web"

[[backend]]
name = "web"
source = {source}
"""


def test_source_addresses_are_ip_addresses():
    config = parse_config(CONFIG.format(source='["127.0.0.2", "::1"]'), "lb.toml")
    assert config.backend[0].source == ["127.0.0.2", "::1"]


@pytest.mark.parametrize("bad", ['["127.0.0.2", "eth0"]', '["127.0.0.300"]', '["10.0.0.0/8"]'])
def test_a_source_that_is_not_an_address_names_its_line(bad: str):
    with pytest.raises(ConfigError) as error:
        parse_config(CONFIG.format(source=bad), "lb.toml")
    [problem] = error.value.problems
    assert problem.line == 8
    assert "is not an IP address" in problem.message
