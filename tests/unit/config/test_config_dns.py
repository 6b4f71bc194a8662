"""`[dns]` (SPEC.md "The tiers beyond one machine"): what `balancer check` accepts and
refuses, each problem as the full `FILE:LINE: message` text, and the defaults filled in."""

from __future__ import annotations

from textwrap import dedent

import pytest

from balancer.config import ConfigError
from balancer.server import parse_runnable

# The SPEC example's [dns] table, verbatim, plus the site "us" its second answer names.
DNS_TABLE = dedent(
    """\
    [dns]                        # health-aware authoritative DNS for the site's names
    bind = ["10.0.2.53:53"]      # UDP and TCP
    zone = "example.com"
    ttl = "30s"
      [[dns.record]]
      name = "www"               # www.example.com
      type = "A"                 # or "AAAA"
      policy = "all"             # every healthy answer; "weighted": one by weight; "nearest": the client's site first
      answers = [ { address = "10.100.0.1", site = "eu", weight = 100, check = { type = "tcp", port = 80 } },
                  { address = "10.200.0.1", site = "us", weight = 100, check = { type = "tcp", port = 80 } } ]
      [[dns.site]]
      name = "eu"
      prefixes = ["10.1.0.0/16"] # client address, or its EDNS Client Subnet
      [[dns.site]]
      name = "us"
      prefixes = ["10.2.0.0/16"]
    """
)

NAME_RULE = " (labels of 1 to 63 letters, digits, '-' or '_', joined by dots)"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_runnable(text, "lb.toml")
    return [str(problem) for problem in caught.value.problems]


def dns(*lines: str) -> str:
    """A [dns] table with `lines` from line 4 on."""
    return '[dns]\nbind = ["127.0.0.1:5353"]\nzone = "example.com"\n' + "".join(line + "\n" for line in lines)


def record(name: str, answers: str, *, type_: str = "A", policy: str = "all") -> str:
    return f'[[dns.record]]\nname = "{name}"\ntype = "{type_}"\npolicy = "{policy}"\nanswers = [{answers}]'


def test_the_spec_example_alone_is_a_node_to_run() -> None:
    config = parse_runnable(DNS_TABLE, "lb.toml")
    assert config.dns is not None
    assert config.dns.ttl == 30.0
    assert config.dns.owner(config.dns.record[0]) == "www.example.com"
    check = config.dns.record[0].answers[0].check
    assert check is not None and check.port == 80 and check.rise == 2 and check.fall == 3


def test_defaults_of_ns_and_soa() -> None:
    config = parse_runnable(dns(), "lb.toml")
    assert config.dns is not None
    assert config.dns.name_servers() == ["ns1.example.com"]
    assert config.dns.soa_names() == ("ns1.example.com", "hostmaster.example.com")
    assert config.dns.soa.minimum == 30.0 and config.dns.soa.serial == 1
    assert config.dns.tcp_idle_timeout == 10.0


def test_apex_and_absolute_names_and_a_trailing_dot_zone() -> None:
    text = '[dns]\nbind = ["127.0.0.1:5353"]\nzone = "Example.COM."\n'
    text += record("@", '{ address = "192.0.2.1" }') + "\n"
    text += record("api.example.com.", '{ address = "2001:db8::1" }', type_="AAAA")
    config = parse_runnable(text, "lb.toml")
    assert config.dns is not None
    assert config.dns.zone == "example.com"
    assert [config.dns.owner(r) for r in config.dns.record] == ["example.com", "api.example.com"]


def test_address_family_must_match_the_type() -> None:
    text = dns(record("www", '{ address = "2001:db8::1" }'), record("v6", '{ address = "10.0.0.1" }', type_="AAAA"))
    assert problems(text) == [
        "lb.toml:8: address 2001:db8::1 is not IPv4: an A record answers IPv4 addresses",
        "lb.toml:13: address 10.0.0.1 is not IPv6: an AAAA record answers IPv6 addresses",
    ]


def test_an_answer_address_must_be_an_ip() -> None:
    assert problems(dns(record("www", '{ address = "web1" }'))) == [
        "lb.toml:8: invalid address 'web1': not an IP address"
    ]


def test_undefined_site_and_nearest_without_sites() -> None:
    text = dns(
        record("www", '{ address = "10.0.0.1", site = "mars" }', policy="nearest"),
        record("api", '{ address = "10.0.0.2" }', policy="nearest"),
        record("img", '{ address = "10.0.0.3", site = "mars" }'),  # a label only: accepted
    )
    assert problems(text) == [
        "lb.toml:8: site 'mars' is not defined: policy \"nearest\" needs a [[dns.site]] of this name",
        'lb.toml:12: api.example.com: policy "nearest" needs answers with a site',
    ]


def test_the_spec_example_is_valid() -> None:
    """SPEC.md's [dns] example, as written (its "us" site has no [[dns.site]])."""
    text = """
[dns]
bind = ["10.0.2.53:53"]
zone = "example.com"
ttl = "30s"
  [[dns.record]]
  name = "www"
  type = "A"
  policy = "all"
  answers = [ { address = "10.100.0.1", site = "eu", weight = 100, check = { type = "tcp", port = 80 } },
              { address = "10.200.0.1", site = "us", weight = 100, check = { type = "tcp", port = 80 } } ]
  [[dns.site]]
  name = "eu"
  prefixes = ["10.1.0.0/16"]
"""
    assert parse_runnable(text, "lb.toml").dns is not None


def test_duplicate_records_and_addresses() -> None:
    text = dns(
        record("www", '{ address = "10.0.0.1" }, { address = "10.0.0.1" }'),
        record("WWW.example.com.", '{ address = "10.0.0.2" }'),
    )
    assert problems(text) == [
        "lb.toml:8: address 10.0.0.1 is listed twice in www.example.com",
        "lb.toml:10: A record for www.example.com defined twice (first at line 5)",
    ]


def test_names_outside_the_zone_and_bad_names() -> None:
    text = dns(record("www.example.org.", '{ address = "10.0.0.1" }'))
    assert problems(text) == ["lb.toml:5: name 'www.example.org.' is not in the zone example.com"]
    assert problems(dns(record("bad name", '{ address = "10.0.0.1" }'))) == [
        "lb.toml:5: invalid name 'bad name': not a DNS name" + NAME_RULE,
    ]


def test_zone_must_be_a_name() -> None:
    text = '[dns]\nbind = ["127.0.0.1:5353"]\nzone = "-bad..com"\n'
    assert problems(text) == ["lb.toml:3: invalid zone '-bad..com': not a DNS name" + NAME_RULE]


def test_sites_prefixes_and_duplicates() -> None:
    text = dns(
        '[[dns.site]]\nname = "eu"\nprefixes = ["10.1.0.0/16"]',
        '[[dns.site]]\nname = "eu"\nprefixes = ["10.1.0.0/16", "nope"]',
    )
    assert problems(text) == ["lb.toml:9: prefixes: invalid network 'nope': expected CIDR such as 10.0.0.0/8"]
    text = dns(
        '[[dns.site]]\nname = "eu"\nprefixes = ["10.1.0.0/16"]',
        '[[dns.site]]\nname = "eu"\nprefixes = ["10.1.0.0/16"]',
    )
    assert problems(text) == [
        "lb.toml:8: duplicate site name 'eu' (first defined at line 5)",
        "lb.toml:9: prefix 10.1.0.0/16 already belongs to site 'eu'",
    ]


def test_check_takes_a_backends_keys_and_refuses_others() -> None:
    good = '{ address = "10.0.0.1", check = { type = "http", path = "/health", expect = "2xx", port = 8080 } }'
    config = parse_runnable(dns(record("www", good)), "lb.toml")
    assert config.dns is not None
    check = config.dns.record[0].answers[0].check
    assert check is not None and (check.type, check.path, check.port) == ("http", "/health", 8080)
    bad = '{ address = "10.0.0.1", check = { type = "tcp", intervall = "1s" } }'
    assert problems(dns(record("www", bad))) == [
        "lb.toml:8: unknown key 'intervall' in check of [[dns.record.answers]] (did you mean 'interval'?)"
    ]


def test_ttl_in_whole_seconds_and_soa_names() -> None:
    text = dns('ttl = "1500ms"', 'soa = { mname = "ns1" }')
    assert problems(text) == [
        "lb.toml:4: invalid ttl 1.5s: DNS counts it in whole seconds, at most 2147483647",
    ]
    assert problems(dns('soa = { mname = "ns1" }')) == [
        "lb.toml:4: soa.mname 'ns1' is a single label: write the full name, such as ns1.example.com"
    ]


def test_dns_bind_clashes_with_a_tcp_listener() -> None:
    text = '[stats]\nbind = "127.0.0.1:5353"\n' + dns()
    assert problems(text) == ["lb.toml:4: address 127.0.0.1:5353 is already bound by [stats] (line 2)"]


def test_an_empty_record_is_refused() -> None:
    assert problems(dns('[[dns.record]]\nname = "www"\nanswers = []')) == ["lb.toml:6: answers needs at least 1 entry"]
