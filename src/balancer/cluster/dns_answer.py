"""[dns]: what the authoritative server answers to one query. No I/O: wire bytes in, bytes out.

Theory of operation. `Responder` is built from the `[dns]` table and asks `healthy(key)`
about each answer when it answers; cluster/dns.py owns the sockets and the health checks.
dnspython parses and writes the wire format; the decisions are here, in the order a
query meets them:

- fewer than 12 bytes, or a message with QR set (a response): dropped, never answered,
  so a forged source cannot bounce packets between servers;
- bytes dnspython cannot parse: FORMERR, a bare 12-byte header echoing the id;
- an opcode other than QUERY: NOTIMP; not exactly one question: FORMERR; EDNS version
  above 0: BADVERS (RFC 6891);
- a class other than IN, or a name outside the zone: REFUSED, without the AA flag (this
  server is no resolver); AXFR and IXFR: REFUSED (no zone transfers);
- a name in the zone that is neither a record's owner, the apex, nor an empty
  non-terminal above an owner: NXDOMAIN; a name that exists without the type asked:
  NOERROR and no answer (NODATA). Both carry the SOA in the authority section with the
  negative TTL, min(ttl, soa.minimum) (RFC 2308);
- ANY: one synthesized HINFO "RFC8482" "" record (RFC 8482 section 4.2), the smallest
  answer that says "ask for a type", for every existing name;
- SOA and NS at the apex; A or AAAA where a record is: the answers of its policy.

Answers. An answer without a check is always up. The policy sees the answers that are up;
when none is, it sees all of them (fail open, as F5 GTM, NS1 and PowerDNS `ifportup`
do: a name that answers nothing takes the whole service down, while an answer whose
check fails may still serve some clients). `all`: every one, rotated by one per query;
`weighted`: one, drawn by weight; `nearest`: those of the client's site first, then the
others, each group rotated. The client's site is the [[dns.site]] with the longest
prefix holding the EDNS Client Subnet (RFC 7871) when the query has one, else the source
address; a response to a query with ECS echoes it with scope = the source prefix length
when the answer depended on it (`nearest`), else 0. ECS with source prefix 0 means
"answer for everyone": no site.

No amplification. Responses are minimal: no NS in the authority section of answers, no
additional records, names compressed. A UDP response larger than the client can take
(512 bytes without EDNS, else its payload size capped at 1232, the DNS flag day 2020
value) is sent truncated (TC, no records) so the client asks again over TCP, where the
limit is 65535.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from balancer.config.model import Dns, DnsAnswer

# (owner, type, address): one answer of one record; the key of its health.
AnswerKey = tuple[str, str, str]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UDP_PLAIN = 512  # RFC 1035: a UDP message without EDNS
UDP_MAX = 1232  # what we send over UDP at most, whatever the client offers (DNS flag day 2020)
TCP_MAX = 65535
HEADER = 12
MAX_PLANS = 4096  # query shapes remembered (and client addresses' sites); then forgotten at once
MAX_RENDERINGS = 256  # wire forms kept per query shape (orders and subsets of a record's answers)
_UNKNOWN = object()
_QR = 0x8000
_ZONE_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)


@dataclass
class _Record:
    owner: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    policy: str
    ttl: int
    answers: list[DnsAnswer]
    keys: list[AnswerKey]
    rotation: int = 0


@dataclass
class Reply:
    """A response to send (None: drop the query) and its rcode's name for the counters."""

    wire: bytes | None
    rcode: str
    truncated: bool = False


Subnet = tuple[Network | None, str, int]  # an EDNS Client Subnet: (network or None for /0, address, length)


@dataclass
class _Plan:
    """The decision for one query's bytes: `fixed` reply, or the `record` whose answers it
    gets, with the parsed query, its client subnet, and the wire form of each choice seen."""

    fixed: Reply | None
    query: dns.message.Message | None = None
    record: _Record | None = None
    ecs: Subnet | None = None
    over_tcp: bool = False
    renderings: dict[tuple[str, ...], Reply] = field(default_factory=dict)


@dataclass
class _Site:
    name: str
    prefixes: list[Network] = field(default_factory=list)


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name, origin=dns.name.root)


class Responder:
    """Answers queries for one [dns] table. `healthy(key)` says whether an answer is up;
    `rng` draws `weighted` answers (inject a seeded one in tests)."""

    def __init__(self, config: Dns, healthy: Callable[[AnswerKey], bool], rng: random.Random | None = None) -> None:
        self.config = config
        self.healthy = healthy
        self.rng = rng or random.Random()
        self.origin = _absolute(config.zone)
        self.ttl = int(config.ttl)
        self.negative_ttl = min(self.ttl, int(config.soa.minimum))
        mname, rname = config.soa_names()
        soa = config.soa
        text = (
            f"{mname}. {rname}. {soa.serial} {int(soa.refresh)} {int(soa.retry)} {int(soa.expire)} {int(soa.minimum)}"
        )
        self.soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text)
        self.ns = [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NS, f"{n}.") for n in config.name_servers()]
        self.hinfo = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.HINFO, '"RFC8482" ""')
        self.records: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], _Record] = {}
        self.names: set[dns.name.Name] = {self.origin}
        for record in config.record:
            owner_text = config.owner(record)
            owner = _absolute(owner_text)
            rdtype = dns.rdatatype.A if record.type == "A" else dns.rdatatype.AAAA
            ttl = int(record.ttl if record.ttl is not None else config.ttl)
            keys: list[AnswerKey] = [(owner_text, record.type, answer.address) for answer in record.answers]
            self.records[(owner, rdtype)] = _Record(owner, rdtype, record.policy, ttl, list(record.answers), keys)
            name = owner
            while name != self.origin and name.is_subdomain(self.origin):  # owner and empty non-terminals
                self.names.add(name)
                name = name.parent()
        self.sites = [_Site(site.name, list(site.prefixes)) for site in config.site]
        self.plans: dict[bytes, _Plan] = {}
        self.source_sites: dict[str, object] = {}

    # -- answers of a record ----------------------------------------------------------------

    def serving(self, owner: str, rdtype: str, site: str | None = None) -> list[DnsAnswer]:
        """The answers a record gives now in the order of its policy, for a client of `site`
        (`weighted`: every candidate; the query draws one of them). For `ctl show dns`."""
        record = self.records.get((_absolute(owner), dns.rdatatype.from_text(rdtype)))
        if record is None:
            return []
        return self._candidates(record, site, advance=False)

    def _candidates(self, record: _Record, site: str | None, advance: bool) -> list[DnsAnswer]:
        up = [answer for answer, key in zip(record.answers, record.keys, strict=True) if self.healthy(key)]
        usable = up or record.answers  # fail open: see the module's docstring
        turn = record.rotation
        if advance:
            record.rotation = (record.rotation + 1) % (1 << 30)
        if record.policy == "nearest" and site is not None:
            near = [answer for answer in usable if answer.site == site]
            far = [answer for answer in usable if answer.site != site]
            return _rotated(near, turn) + _rotated(far, turn)
        return _rotated(usable, turn)

    def _answer(self, record: _Record, site: str | None) -> list[DnsAnswer]:
        candidates = self._candidates(record, site, advance=True)
        if record.policy == "weighted":
            return self.rng.choices(candidates, weights=[answer.weight for answer in candidates])
        return candidates

    def site_of(self, client: Network | None) -> str | None:
        """The [[dns.site]] whose longest prefix holds `client`, or None."""
        if client is None:
            return None
        best: tuple[int, str] | None = None
        for site in self.sites:
            for prefix in site.prefixes:
                inside = prefix.version == client.version and client.subnet_of(prefix)  # type: ignore[arg-type]
                if inside and (best is None or prefix.prefixlen > best[0]):
                    best = (prefix.prefixlen, site.name)
        return best[1] if best is not None else None

    # -- one query ----------------------------------------------------------------------------

    def respond(self, wire: bytes, source: str, over_tcp: bool = False) -> Reply:
        """The reply to the query `wire` from address `source` (see the module's docstring).

        Fast path: the answer to a query depends on its bytes after the id, the transport,
        and for a record on the answers chosen; so the decision for those bytes (a `_Plan`)
        is kept, and the wire form of each distinct choice, and a query seen before costs a
        dict lookup, the policy's choice, and the id spliced into bytes already rendered."""
        if len(wire) < HEADER or wire[2] & 0x80:
            return Reply(None, "dropped")
        key = wire[2:] + (b"t" if over_tcp else b"u")
        plan = self.plans.get(key)
        if plan is None:
            plan = self._plan(wire, over_tcp)
            if len(self.plans) >= MAX_PLANS:
                self.plans.clear()  # a flood of distinct queries: start over rather than grow
            self.plans[key] = plan
        record = plan.record
        if record is None:
            reply = plan.fixed
            assert reply is not None and reply.wire is not None
        else:
            site = None
            if record.policy == "nearest":
                site = self._site_of_source(source) if plan.ecs is None else self.site_of(plan.ecs[0])
            answers = self._answer(record, site)
            choice = tuple(answer.address for answer in answers)
            cached = plan.renderings.get(choice)
            if cached is None:
                cached = self._render(plan, record, answers)
                if len(plan.renderings) < MAX_RENDERINGS:
                    plan.renderings[choice] = cached
            reply = cached
            assert reply.wire is not None
        return Reply(wire[:2] + reply.wire[2:], reply.rcode, reply.truncated)

    def _site_of_source(self, source: str) -> str | None:
        site = self.source_sites.get(source, _UNKNOWN)
        if site is _UNKNOWN:
            site = self.site_of(_host_network(source))
            if len(self.source_sites) >= MAX_PLANS:
                self.source_sites.clear()
            self.source_sites[source] = site
        return site if isinstance(site, str) else None

    def _plan(self, wire: bytes, over_tcp: bool) -> _Plan:
        """The decision for a query's bytes: a fixed reply, or the record whose answers it gets."""
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            # The id and opcode are all we trust: QR, the opcode and RD echoed, FORMERR.
            flags = (_QR | (int.from_bytes(wire[2:4], "big") & 0x7900) | dns.rcode.FORMERR).to_bytes(2, "big")
            return _Plan(Reply(wire[:2] + flags + bytes(8), "FORMERR"))
        response = self._response(query)
        if query.opcode() != dns.opcode.QUERY:
            return _Plan(self._finish(query, response, dns.rcode.NOTIMP, over_tcp))
        if len(query.question) != 1:
            return _Plan(self._finish(query, response, dns.rcode.FORMERR, over_tcp))
        if query.edns > 0:
            response.use_edns(0, payload=UDP_MAX)
            return _Plan(self._finish(query, response, dns.rcode.BADVERS, over_tcp))
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(self.origin) or qtype in _ZONE_TRANSFERS:
            return _Plan(self._finish(query, response, dns.rcode.REFUSED, over_tcp))
        response.flags |= dns.flags.AA
        try:
            ecs = _client_subnet(query)
        except ValueError:
            return _Plan(self._finish(query, response, dns.rcode.FORMERR, over_tcp))
        if qname not in self.names:
            self._negative(response)
            _echo_subnet(response, ecs, 0)
            return _Plan(self._finish(query, response, dns.rcode.NXDOMAIN, over_tcp))
        if qtype == dns.rdatatype.ANY:
            self._add(response, qname, dns.rdatatype.HINFO, self.ttl, [self.hinfo])
        elif qname == self.origin and qtype == dns.rdatatype.SOA:
            self._add(response, qname, dns.rdatatype.SOA, self.ttl, [self.soa])
        elif qname == self.origin and qtype == dns.rdatatype.NS:
            self._add(response, qname, dns.rdatatype.NS, self.ttl, self.ns)
        elif (record := self.records.get((qname, qtype))) is not None:
            return _Plan(None, query, record, ecs, over_tcp)
        else:
            self._negative(response)  # NODATA: the name exists, not with this type
        _echo_subnet(response, ecs, 0)
        return _Plan(self._finish(query, response, dns.rcode.NOERROR, over_tcp))

    def _response(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=UDP_MAX)
        response.flags &= ~dns.flags.RA
        return response

    def _render(self, plan: _Plan, record: _Record, answers: list[DnsAnswer]) -> Reply:
        """The reply of `plan`'s query when `answers` are chosen."""
        query = plan.query
        assert query is not None
        response = self._response(query)
        response.flags |= dns.flags.AA
        rdatas = [dns.rdata.from_text(dns.rdataclass.IN, record.rdtype, answer.address) for answer in answers]
        self._add(response, record.owner, record.rdtype, record.ttl, rdatas)
        scope = 0
        if record.policy == "nearest" and plan.ecs is not None and plan.ecs[0] is not None:
            scope = plan.ecs[0].prefixlen
        _echo_subnet(response, plan.ecs, scope)
        return self._finish(query, response, dns.rcode.NOERROR, plan.over_tcp)

    def _add(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: int, ttl: int, rdatas: list[dns.rdata.Rdata]
    ) -> None:
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype))
        rrset.update_ttl(ttl)
        for rdata in rdatas:
            rrset.add(rdata)
        response.answer.append(rrset)

    def _negative(self, response: dns.message.Message) -> None:
        rrset = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.update_ttl(self.negative_ttl)
        rrset.add(self.soa)
        response.authority.append(rrset)

    def _finish(self, query: dns.message.Message, response: dns.message.Message, rcode: int, over_tcp: bool) -> Reply:
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        if over_tcp:
            limit = TCP_MAX
        elif query.edns < 0:
            limit = UDP_PLAIN
        else:
            limit = max(UDP_PLAIN, min(query.payload, UDP_MAX))
        name = dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
        # want_shuffle=False: the policy ordered the answers; dnspython would shuffle them.
        try:
            return Reply(response.to_wire(max_size=limit, want_shuffle=False), name)
        except dns.exception.TooBig:
            # Every record goes: a client that sees TC asks again over TCP (RFC 2181 9).
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return Reply(response.to_wire(max_size=limit, want_shuffle=False), name, truncated=True)


def _rotated(answers: list[DnsAnswer], turn: int) -> list[DnsAnswer]:
    if not answers:
        return answers
    start = turn % len(answers)
    return answers[start:] + answers[:start]


def _host_network(address: str) -> Network | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a v4 client on a dual-stack socket
    return ipaddress.ip_network(ip)


def _echo_subnet(response: dns.message.Message, ecs: Subnet | None, scope: int) -> None:
    """RFC 7871 7.2.1: the response carries the query's ECS option, with the scope the
    answer is valid for (0: for every client)."""
    if ecs is not None and response.edns >= 0:
        response.use_edns(0, payload=UDP_MAX, options=[dns.edns.ECSOption(ecs[1], ecs[2], scope)])


def _client_subnet(query: dns.message.Message) -> Subnet | None:
    """The query's EDNS Client Subnet as (network or None for /0, address, source length)."""
    for option in query.options:
        if isinstance(option, dns.edns.ECSOption):
            srclen = int(option.srclen)
            address = str(option.address)
            if srclen == 0:
                return (None, address, 0)
            return (ipaddress.ip_network(f"{address}/{srclen}", strict=False), address, srclen)
    return None
