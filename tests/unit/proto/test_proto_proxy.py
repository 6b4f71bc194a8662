"""The PROXY protocol without sockets: parsing v1 and v2 (HAProxy's proxy-protocol.txt),
partial input, malformed and oversized headers, and build_v1/build_v2 read back by the parser."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from balancer.net.peer import proxy_header
from balancer.proto.proxy import (
    V1_MAX,
    V2_SIGNATURE,
    ProxyInfo,
    ProxyProtocolError,
    build_v1,
    build_v2,
    parse_proxy_header,
)

PAYLOAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, body: bytes, version: int = 2) -> bytes:
    """A hand-built v2 header: signature, version/command, family/transport, length, body."""
    return V2_SIGNATURE + struct.pack("!BBH", (version << 4) | command, family, len(body)) + body


def v2_tcp4(source: str, source_port: int, dest: str, dest_port: int, tlvs: bytes = b"") -> bytes:
    body = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(dest).packed
    return v2(0x1, 0x11, body + struct.pack("!HH", source_port, dest_port) + tlvs)


def v2_tcp6(source: str, source_port: int, dest: str, dest_port: int, tlvs: bytes = b"") -> bytes:
    body = ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(dest).packed
    return v2(0x1, 0x21, body + struct.pack("!HH", source_port, dest_port) + tlvs)


def parsed(data: bytes) -> tuple[ProxyInfo, int]:
    result = parse_proxy_header(data)
    assert result is not None, f"expected a complete header in {data!r}"
    return result


# -- v1 ------------------------------------------------------------------------------------


def test_v1_tcp4_and_what_follows_is_left_alone():
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
    info, consumed = parsed(header + PAYLOAD)
    assert info == ProxyInfo("192.0.2.10", 56324, "198.51.100.1", 443)
    assert not info.local
    assert consumed == len(header)
    assert (header + PAYLOAD)[consumed:] == PAYLOAD


def test_v1_tcp6():
    header = b"PROXY TCP6 2001:db8::1 2001:db8::ff 1 65535\r\n"
    info, consumed = parsed(header)
    assert info == ProxyInfo("2001:db8::1", 1, "2001:db8::ff", 65535)
    assert consumed == len(header)


def test_v1_tcp6_addresses_are_normalised():
    info, _ = parsed(b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1000 80\r\n")
    assert info.source_ip == "2001:db8::1"
    assert info.dest_ip == "::1"


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",  # anything may follow UNKNOWN
    ],
)
def test_v1_unknown_is_local(header: bytes):
    info, consumed = parsed(header + PAYLOAD)
    assert info.local
    assert consumed == len(header)


def test_v1_longest_possible_header_is_accepted():
    six = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    header = f"PROXY TCP6 {six} {six} 65535 65535\r\n".encode()
    assert len(header) <= V1_MAX
    info, consumed = parsed(header)
    assert info.source_ip == six and info.source_port == 65535
    assert consumed == len(header)


def test_v1_every_prefix_asks_for_more():
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
    for n in range(len(header)):
        assert parse_proxy_header(header[:n]) is None, header[:n]
    assert parse_proxy_header(header) is not None


def test_v1_line_without_crlf_within_107_bytes_is_too_long():
    start = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443"
    assert parse_proxy_header(start + b" " * (V1_MAX - 1 - len(start))) is None  # 106 bytes: may still end
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(start + b" " * (V1_MAX - len(start)))  # 107 bytes and no CRLF
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n")


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443 extra\r\n",  # one too many
        b"PROXY TCP4  192.0.2.10 198.51.100.1 56324 443\r\n",  # two spaces
        b"PROXY TCP5 192.0.2.10 198.51.100.1 56324 443\r\n",  # no such protocol
        b"PROXY tcp4 192.0.2.10 198.51.100.1 56324 443\r\n",  # case matters
        b"PROXY TCP4 192.0.2.300 198.51.100.1 56324 443\r\n",  # not an address
        b"PROXY TCP4 example.com 198.51.100.1 56324 443\r\n",  # names are not addresses
        b"PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n",  # v6 address in a TCP4 line
        b"PROXY TCP6 192.0.2.10 2001:db8::1 56324 443\r\n",  # v4 address in a TCP6 line
        b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.10 198.51.100.1 056324 443\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 443\r\n",  # sign
        b"PROXY TCP4 192.0.2.10 198.51.100.1 5632a 443\r\n",  # not a number
        b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 \r\n",  # empty port
        b"PROXY \r\n",
    ],
)
def test_v1_malformed_is_refused(header: bytes):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(header)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXYTCP4",
        b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
        b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c",  # almost the v2 signature
        b"\r\n\r\n\x01",
        b"X",
    ],
)
def test_anything_else_is_refused_at_once(data: bytes):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


def test_nothing_yet_asks_for_more():
    assert parse_proxy_header(b"") is None


# -- v2 ------------------------------------------------------------------------------------


def test_v2_tcp4():
    header = v2_tcp4("203.0.113.9", 40000, "10.0.0.1", 8443)
    info, consumed = parsed(header + PAYLOAD)
    assert info == ProxyInfo("203.0.113.9", 40000, "10.0.0.1", 8443)
    assert consumed == len(header) == 16 + 12


def test_v2_tcp6():
    header = v2_tcp6("2001:db8::9", 1234, "2001:db8::1", 443)
    info, consumed = parsed(header + PAYLOAD)
    assert info == ProxyInfo("2001:db8::9", 1234, "2001:db8::1", 443)
    assert consumed == len(header) == 16 + 36


def test_v2_tlvs_are_skipped_by_the_length():
    tlvs = b"\x01\x00\x08http/1.1" + b"\x02\x00\x09a.example" + b"\x04" + struct.pack("!H", 300) + b"\x00" * 300
    header = v2_tcp4("203.0.113.9", 40000, "10.0.0.1", 443, tlvs)
    info, consumed = parsed(header + PAYLOAD)
    assert info.source_ip == "203.0.113.9"
    assert consumed == len(header)
    assert (header + PAYLOAD)[consumed:] == PAYLOAD


def test_v2_local_command_keeps_the_real_peer():
    header = v2(0x0, 0x00, b"")
    info, consumed = parsed(header + PAYLOAD)
    assert info.local
    assert consumed == 16


def test_v2_local_command_skips_whatever_address_it_carries():
    body = ipaddress.IPv4Address("203.0.113.9").packed * 2 + struct.pack("!HH", 1, 2)
    header = v2(0x0, 0x11, body)
    info, consumed = parsed(header + PAYLOAD)
    assert info.local
    assert consumed == len(header)


def test_v2_proxy_command_with_unspec_family_is_local():
    header = v2(0x1, 0x00, b"\x00" * 5)
    info, consumed = parsed(header + PAYLOAD)
    assert info.local
    assert consumed == len(header)


def test_v2_unix_stream_falls_back_to_unspec():
    """proxy-protocol.txt 2.2: a receiver that does not implement a valid combination
    (here AF_UNIX stream, 0x31, 2*108 address bytes) "automatically falls back to the
    UNSPEC mode" for it: the connection is accepted with the real peer's address."""
    header = v2(0x1, 0x31, b"/run/client.sock".ljust(108, b"\x00") + b"/run/server.sock".ljust(108, b"\x00"))
    info, consumed = parsed(header + PAYLOAD)
    assert info.local
    assert consumed == len(header)


def test_v2_every_prefix_asks_for_more():
    header = v2_tcp6("2001:db8::9", 1234, "2001:db8::1", 443, b"\x04\x00\x03abc")
    for n in range(len(header)):
        assert parse_proxy_header(header[:n]) is None, n
    assert parse_proxy_header(header) is not None


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (v2(0x1, 0x11, b"\x00" * 12, version=1), "version 1 with the v2 signature"),
        (v2(0x1, 0x11, b"\x00" * 12, version=3), "version 3"),
        (v2(0x2, 0x11, b"\x00" * 12), "command 2"),
        (v2(0xF, 0x11, b"\x00" * 12), "command 15"),
        (v2(0x1, 0x11, b"\x00" * 11), "IPv4 block too short"),
        (v2(0x1, 0x21, b"\x00" * 35), "IPv6 block too short"),
        (v2(0x1, 0x41, b"\x00" * 12), "address family 4 does not exist"),
        (v2(0x1, 0x13, b"\x00" * 12), "transport 3 does not exist"),
    ],
)
def test_v2_malformed_is_refused(header: bytes, why: str):
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(header + PAYLOAD)


def test_v2_largest_header_is_accepted():
    tlv = b"\xee" + struct.pack("!H", 65535 - 12 - 3) + b"z" * (65535 - 12 - 3)
    header = v2_tcp4("203.0.113.9", 1, "10.0.0.1", 2, tlv)
    assert len(header) == 16 + 65535
    info, consumed = parsed(header)
    assert info.source_ip == "203.0.113.9"
    assert consumed == len(header)


# -- building and reading back ---------------------------------------------------------------


@pytest.mark.parametrize("build", [build_v1, build_v2])
@pytest.mark.parametrize(
    "addresses",
    [
        ("127.0.0.1", 50000, "127.0.0.1", 8080),
        ("203.0.113.9", 0, "10.1.2.3", 65535),
        ("2001:db8::9", 1, "2001:db8::1", 443),
        ("::1", 65535, "::1", 80),
        ("::ffff:192.0.2.1", 1234, "2001:db8::1", 443),  # a mapped address is an IPv6 address
    ],
)
def test_built_headers_read_back(build, addresses):
    header = build(*addresses)
    info, consumed = parsed(header + PAYLOAD)
    assert consumed == len(header)
    assert not info.local
    assert (info.source_ip, info.source_port, info.dest_ip, info.dest_port) == (
        str(ipaddress.ip_address(addresses[0])),
        addresses[1],
        str(ipaddress.ip_address(addresses[2])),
        addresses[3],
    )


def test_build_v1_text():
    assert build_v1("192.0.2.1", 5000, "192.0.2.2", 80) == b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n"
    assert build_v1("2001:db8::1", 5000, "::1", 80) == b"PROXY TCP6 2001:db8::1 ::1 5000 80\r\n"


def test_build_v2_bytes():
    header = build_v2("192.0.2.1", 5000, "192.0.2.2", 80)
    assert header[:12] == V2_SIGNATURE
    assert header[12] == 0x21  # version 2, PROXY
    assert header[13] == 0x11  # TCP over IPv4
    assert struct.unpack("!H", header[14:16])[0] == 12
    assert header[16:] == bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 5000, 80)


@pytest.mark.parametrize(
    "addresses",
    [
        ("192.0.2.1", 5000, "2001:db8::1", 80),  # families differ
        ("unix", 0, "", 0),  # a unix-socket client
        ("", 0, "", 0),
    ],
)
def test_build_without_a_common_family(addresses):
    assert build_v1(*addresses) == b"PROXY UNKNOWN\r\n"
    header = build_v2(*addresses)
    assert header == V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL, UNSPEC, no address
    info, consumed = parsed(build_v1(*addresses) + PAYLOAD)
    assert info.local and consumed == len(b"PROXY UNKNOWN\r\n")
    info, consumed = parsed(header + PAYLOAD)
    assert info.local and consumed == 16


# -- net.peer.proxy_header: what a session sends -------------------------------------------


class _FakeTransport:
    def __init__(self, sockname: object) -> None:
        self.sockname = sockname

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sockname if name == "sockname" else default


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_names_the_client_and_the_address_it_reached(version):
    transport = _FakeTransport(("127.0.0.1", 8080))
    info, _ = parsed(proxy_header(version, ("203.0.113.9", 40000), transport))  # type: ignore[arg-type]
    assert info == ProxyInfo("203.0.113.9", 40000, "127.0.0.1", 8080)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_from_a_dual_stack_listener_is_ipv4(version):
    transport = _FakeTransport(("::ffff:127.0.0.1", 8080, 0, 0))
    info, _ = parsed(proxy_header(version, ("127.0.0.1", 40000), transport))  # type: ignore[arg-type]
    assert info == ProxyInfo("127.0.0.1", 40000, "127.0.0.1", 8080)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_from_a_unix_listener_is_local(version):
    info, _ = parsed(proxy_header(version, ("unix", 0), _FakeTransport("/run/lb.sock")))  # type: ignore[arg-type]
    assert info.local
