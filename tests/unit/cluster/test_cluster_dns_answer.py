"""cluster.dns_answer: what the [dns] server answers, query by query, as dnspython messages.

No sockets: wire bytes in, wire bytes out, health given as a set of answers that are down.
"""

from __future__ import annotations

import random
from collections import Counter
from textwrap import dedent

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from balancer.cluster.dns_answer import AnswerKey, Responder
from balancer.server import parse_runnable

ZONE = dedent(
    """\
    [dns]
    bind = ["127.0.0.1:5353"]
    zone = "example.com"
    ttl = "30s"
    ns = ["ns1.example.com", "ns2.example.net"]
    soa = { minimum = "10s" }
      [[dns.record]]
      name = "www"
      answers = [ { address = "192.0.2.1" }, { address = "192.0.2.2" }, { address = "192.0.2.3" } ]
      [[dns.record]]
      name = "www"
      type = "AAAA"
      ttl = "5s"
      answers = [ { address = "2001:db8::1" } ]
      [[dns.record]]
      name = "api.eu"
      policy = "weighted"
      answers = [ { address = "192.0.2.10", weight = 300 }, { address = "192.0.2.11", weight = 100 } ]
      [[dns.record]]
      name = "near"
      policy = "nearest"
      answers = [ { address = "198.51.100.1", site = "eu" }, { address = "198.51.100.2", site = "eu" },
                  { address = "203.0.113.1", site = "us" } ]
      [[dns.site]]
      name = "eu"
      prefixes = ["10.1.0.0/16", "2001:db8:e::/48"]
      [[dns.site]]
      name = "us"
      prefixes = ["10.2.0.0/16", "10.2.9.0/24"]
    """
)

BIG = (
    '[[dns.record]]\nname = "big"\nanswers = ['
    + ", ".join(f'{{ address = "10.9.{n // 250}.{n % 250 + 1}" }}' for n in range(60))
    + "]\n"
)


class Zone:
    """A responder over ZONE (plus `extra`) whose answers in `down` fail their checks."""

    def __init__(self, extra: str = "") -> None:
        config = parse_runnable(ZONE + extra, "lb.toml").dns
        assert config is not None
        self.down: set[AnswerKey] = set()
        self.responder = Responder(config, lambda key: key not in self.down, random.Random(7))

    def ask(
        self,
        name: str,
        rdtype: str = "A",
        source: str = "127.0.0.1",
        *,
        tcp: bool = False,
        **query_options: object,
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **query_options)  # type: ignore[arg-type]
        reply = self.responder.respond(query.to_wire(), source, tcp)
        assert reply.wire is not None
        response = dns.message.from_wire(reply.wire)
        assert response.id == query.id and response.flags & dns.flags.QR
        return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


@pytest.fixture
def zone() -> Zone:
    return Zone()


def test_all_rotates_every_answer_per_query(zone: Zone) -> None:
    first = zone.ask("www.example.com")
    assert first.rcode() == dns.rcode.NOERROR and first.flags & dns.flags.AA
    assert not first.flags & dns.flags.RA
    assert addresses(first) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert first.answer[0].ttl == 30
    assert addresses(zone.ask("www.example.com")) == ["192.0.2.2", "192.0.2.3", "192.0.2.1"]
    assert not first.authority and not first.additional  # minimal responses


def test_a_down_answer_leaves_and_all_down_serves_all(zone: Zone) -> None:
    zone.down.add(("www.example.com", "A", "192.0.2.2"))
    assert sorted(addresses(zone.ask("www.example.com"))) == ["192.0.2.1", "192.0.2.3"]
    zone.down |= {("www.example.com", "A", "192.0.2.1"), ("www.example.com", "A", "192.0.2.3")}
    assert sorted(addresses(zone.ask("www.example.com"))) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_aaaa_with_its_own_ttl(zone: Zone) -> None:
    response = zone.ask("WWW.Example.Com", "AAAA")  # names are case-insensitive
    assert addresses(response) == ["2001:db8::1"] and response.answer[0].ttl == 5


def test_weighted_gives_one_answer_by_weight(zone: Zone) -> None:
    counts = Counter(tuple(addresses(zone.ask("api.eu.example.com"))) for _ in range(2000))
    assert set(counts) == {("192.0.2.10",), ("192.0.2.11",)}
    assert 0.70 < counts[("192.0.2.10",)] / 2000 < 0.80  # 300 : 100
    zone.down.add(("api.eu.example.com", "A", "192.0.2.10"))
    assert {tuple(addresses(zone.ask("api.eu.example.com"))) for _ in range(50)} == {("192.0.2.11",)}


def test_nearest_by_source_address(zone: Zone) -> None:
    eu = addresses(zone.ask("near.example.com", source="10.1.4.4"))
    assert set(eu[:2]) == {"198.51.100.1", "198.51.100.2"} and eu[2] == "203.0.113.1"
    assert addresses(zone.ask("near.example.com", source="10.2.4.4"))[0] == "203.0.113.1"
    assert addresses(zone.ask("near.example.com", source="::ffff:10.2.4.4"))[0] == "203.0.113.1"
    assert len(addresses(zone.ask("near.example.com", source="192.168.1.1"))) == 3  # no site: all


def test_nearest_by_client_subnet_echoes_the_scope(zone: Zone) -> None:
    ecs = dns.edns.ECSOption("10.2.9.0", 24)
    response = zone.ask("near.example.com", source="10.1.4.4", use_edns=0, options=[ecs])
    assert addresses(response)[0] == "203.0.113.1"  # the subnet wins over the resolver's address
    (echo,) = response.options
    assert isinstance(echo, dns.edns.ECSOption)
    assert (echo.address, echo.srclen, echo.scopelen) == ("10.2.9.0", 24, 24)
    v6 = zone.ask("near.example.com", source="10.2.4.4", use_edns=0, options=[dns.edns.ECSOption("2001:db8:e:1::", 56)])
    assert addresses(v6)[0].startswith("198.51.100.")


def test_client_subnet_on_a_record_that_ignores_it_has_scope_zero(zone: Zone) -> None:
    response = zone.ask("www.example.com", use_edns=0, options=[dns.edns.ECSOption("10.2.9.0", 24)])
    (echo,) = response.options
    assert isinstance(echo, dns.edns.ECSOption) and echo.scopelen == 0


def test_nearest_falls_over_to_the_other_site(zone: Zone) -> None:
    zone.down |= {("near.example.com", "A", "198.51.100.1"), ("near.example.com", "A", "198.51.100.2")}
    assert addresses(zone.ask("near.example.com", source="10.1.4.4")) == ["203.0.113.1"]


def test_nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl(zone: Zone) -> None:
    missing = zone.ask("nope.example.com")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA and not missing.answer
    (soa,) = missing.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 10  # min(ttl 30, soa.minimum 10)
    assert soa[0].mname.to_text() == "ns1.example.com." and soa[0].rname.to_text() == "hostmaster.example.com."
    nodata = zone.ask("www.example.com", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority[0].rdtype == dns.rdatatype.SOA
    # "eu.example.com" owns nothing but has api.eu below it: an empty non-terminal, NODATA.
    assert zone.ask("eu.example.com").rcode() == dns.rcode.NOERROR


def test_apex_soa_and_ns(zone: Zone) -> None:
    soa = zone.ask("example.com", "SOA")
    assert soa.answer[0].rdtype == dns.rdatatype.SOA and soa.answer[0][0].minimum == 10
    ns = zone.ask("example.com", "NS")
    assert sorted(addresses(ns)) == ["ns1.example.com.", "ns2.example.net."]


def test_refused_outside_the_zone_and_for_transfers(zone: Zone) -> None:
    outside = zone.ask("www.example.org")
    assert outside.rcode() == dns.rcode.REFUSED and not outside.flags & dns.flags.AA
    assert zone.ask("example.com", "AXFR", tcp=True).rcode() == dns.rcode.REFUSED
    chaos = zone.ask("version.bind", "TXT", rdclass="CH")
    assert chaos.rcode() == dns.rcode.REFUSED


def test_any_gets_one_hinfo_record(zone: Zone) -> None:
    response = zone.ask("www.example.com", "ANY")
    assert len(response.answer) == 1 and response.answer[0].rdtype == dns.rdatatype.HINFO
    assert addresses(response) == ['"RFC8482" ""']


def test_garbage_is_formerr_and_responses_are_dropped(zone: Zone) -> None:
    query = dns.message.make_query("www.example.com", "A").to_wire()
    garbage = query[:12] + b"\x05\xff\xff"
    reply = zone.responder.respond(garbage, "127.0.0.1")
    assert reply.wire is not None and reply.rcode == "FORMERR"
    response = dns.message.from_wire(reply.wire)
    assert response.id == int.from_bytes(query[:2], "big") and response.rcode() == dns.rcode.FORMERR
    assert zone.responder.respond(b"\x00\x01", "127.0.0.1").wire is None  # not even a header
    answer = zone.responder.respond(query, "127.0.0.1").wire
    assert answer is not None and zone.responder.respond(answer, "127.0.0.1").wire is None  # QR set


def test_other_opcodes_are_notimp_and_edns1_badvers(zone: Zone) -> None:
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    reply = zone.responder.respond(notify.to_wire(), "127.0.0.1")
    assert reply.wire is not None and dns.message.from_wire(reply.wire).rcode() == dns.rcode.NOTIMP
    assert zone.ask("www.example.com", use_edns=1).rcode() == dns.rcode.BADVERS


def test_truncation_without_edns_at_512_and_with_edns_at_its_size() -> None:
    zone = Zone(BIG)
    plain = zone.ask("big.example.com", use_edns=False)
    assert plain.flags & dns.flags.TC and not plain.answer
    edns = zone.ask("big.example.com", use_edns=0, payload=4096)  # 60 x 16 bytes: fits 1232
    assert not edns.flags & dns.flags.TC and len(addresses(edns)) == 60
    small = zone.ask("big.example.com", use_edns=0, payload=600)
    assert small.flags & dns.flags.TC
    tcp = zone.ask("big.example.com", use_edns=False, tcp=True)
    assert not tcp.flags & dns.flags.TC and len(addresses(tcp)) == 60


@pytest.mark.parametrize(
    ("name", "rdtype"), [("www.example.com", "ANY"), ("x.y.example.com", "A"), ("example.com", "ANY")]
)
def test_no_amplification(zone: Zone, name: str, rdtype: str) -> None:
    """ANY and unknown names: the response is at most a few times the query."""
    query = dns.message.make_query(name, rdtype, use_edns=0).to_wire()
    reply = zone.responder.respond(query, "127.0.0.1")
    assert reply.wire is not None and len(reply.wire) <= 3 * len(query)


def test_serving_says_what_a_record_gives_now(zone: Zone) -> None:
    assert zone.responder.serving("near.example.com", "A", site="us")[0].address == "203.0.113.1"
    zone.down.add(("www.example.com", "A", "192.0.2.1"))
    assert {a.address for a in zone.responder.serving("www.example.com", "A")} == {"192.0.2.2", "192.0.2.3"}
    assert zone.responder.serving("nope.example.com", "A") == []


def test_a_query_seen_before_gets_its_own_id_and_the_health_of_now(zone: Zone) -> None:
    """The fast path keeps decisions per query bytes (after the id): it must not keep answers."""
    query = dns.message.make_query("www.example.com", "A")
    for number, down in enumerate(((), ("192.0.2.1",), ("192.0.2.1", "192.0.2.3"), ())):
        zone.down = {("www.example.com", "A", address) for address in down}
        query.id = 1000 + number
        reply = zone.responder.respond(query.to_wire(), "127.0.0.1")
        assert reply.wire is not None
        response = dns.message.from_wire(reply.wire)
        assert response.id == 1000 + number
        expected = {"192.0.2.1", "192.0.2.2", "192.0.2.3"} - set(down)
        assert set(addresses(response)) == expected
