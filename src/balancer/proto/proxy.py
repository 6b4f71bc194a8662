"""The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt), sans I/O.

A proxy in front of us prefixes each connection with a header that says who the client
really is. `parse_proxy_header` reads either version from the first bytes of a connection
(the version is told by the first bytes: "PROXY " or the 12-byte v2 signature) and
`build_v1` / `build_v2` write the header we send to servers.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX: Final = 107  # the longest v1 line, CRLF included
_V2_HEAD: Final = struct.Struct("!12sBBH")


class ProxyProtocolError(ValueError):
    pass


@dataclass(frozen=True)
class ProxyInfo:
    """Who the connection is from and to; `local` is a v2 LOCAL or a v1 UNKNOWN header
    (a health check of the proxy itself): keep the real peer then."""

    source_ip: str = ""
    source_port: int = 0
    dest_ip: str = ""
    dest_port: int = 0
    local: bool = False


def parse_proxy_header(data: bytes) -> tuple[ProxyInfo, int] | None:
    """(info, bytes consumed) when `data` starts with a complete header; None when more
    bytes are needed. Raises ProxyProtocolError for anything that is not a valid header."""
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < len(V2_SIGNATURE):
        return None
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if b"PROXY "[: len(data)] == data[:6] and len(data) < 6:
        return None
    if data.startswith(b"PROXY "):
        return _parse_v1(data)
    raise ProxyProtocolError("connection does not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyInfo, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        return None
    words = data[:end].decode("ascii", "replace").split(" ")
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyInfo(local=True), end + 2
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 header: {data[:end][:80]!r}")
    _, family, source, dest, source_port, dest_port = words
    try:
        source_address = ipaddress.ip_address(source)
        dest_address = ipaddress.ip_address(dest)
    except ValueError:
        raise ProxyProtocolError(f"bad address in PROXY v1 header: {data[:end][:80]!r}") from None
    expected = 4 if family == "TCP4" else 6
    if source_address.version != expected or dest_address.version != expected:
        raise ProxyProtocolError(f"{family} header with an address of another family")
    ports = []
    for text in (source_port, dest_port):
        if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
            raise ProxyProtocolError(f"bad port {text!r} in PROXY v1 header")
        ports.append(int(text))
    return ProxyInfo(str(source_address), ports[0], str(dest_address), ports[1]), end + 2


def _parse_v2(data: bytes) -> tuple[ProxyInfo, int] | None:
    if len(data) < _V2_HEAD.size:
        return None
    _, version_command, family, length = _V2_HEAD.unpack_from(data)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"unsupported PROXY protocol version {version_command >> 4}")
    command = version_command & 0x0F
    total = _V2_HEAD.size + length
    if len(data) < total:
        return None
    if command == 0:  # LOCAL
        return ProxyInfo(local=True), total
    if command != 1:
        raise ProxyProtocolError(f"unknown PROXY v2 command {command}")
    body = data[_V2_HEAD.size : total]
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyProtocolError("PROXY v2 IPv4 block too short")
        source, dest, source_port, dest_port = struct.unpack_from("!4s4sHH", body)
    elif family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyProtocolError("PROXY v2 IPv6 block too short")
        source, dest, source_port, dest_port = struct.unpack_from("!16s16sHH", body)
    elif family >> 4 <= 3 and family & 0x0F <= 2:
        # UNSPEC, unix sockets, UDP...: valid but not TCP over IP; the spec says to fall
        # back to UNSPEC and keep the real peer's address.
        return ProxyInfo(local=True), total
    else:
        raise ProxyProtocolError(f"invalid PROXY v2 address family/transport 0x{family:02x}")
    return (
        ProxyInfo(str(ipaddress.ip_address(source)), source_port, str(ipaddress.ip_address(dest)), dest_port),
        total,
    )


def build_v1(source_ip: str, source_port: int, dest_ip: str, dest_port: int) -> bytes:
    """A v1 header; addresses of different families (or none) give "PROXY UNKNOWN"."""
    try:
        source = ipaddress.ip_address(source_ip)
        dest = ipaddress.ip_address(dest_ip)
    except ValueError:
        return b"PROXY UNKNOWN\r\n"
    if source.version != dest.version:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP4" if source.version == 4 else "TCP6"
    return f"PROXY {family} {source} {dest} {source_port} {dest_port}\r\n".encode()


def build_v2(source_ip: str, source_port: int, dest_ip: str, dest_port: int) -> bytes:
    """A v2 PROXY header; addresses of different families (or none) give a LOCAL header."""
    try:
        source = ipaddress.ip_address(source_ip)
        dest = ipaddress.ip_address(dest_ip)
    except ValueError:
        return _V2_HEAD.pack(V2_SIGNATURE, 0x20, 0x00, 0)
    if source.version != dest.version:
        return _V2_HEAD.pack(V2_SIGNATURE, 0x20, 0x00, 0)
    if source.version == 4:
        body = struct.pack("!4s4sHH", source.packed, dest.packed, source_port, dest_port)
        return _V2_HEAD.pack(V2_SIGNATURE, 0x21, 0x11, len(body)) + body
    body = struct.pack("!16s16sHH", source.packed, dest.packed, source_port, dest_port)
    return _V2_HEAD.pack(V2_SIGNATURE, 0x21, 0x21, len(body)) + body
