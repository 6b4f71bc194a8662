"""Scalar value types of the configuration file: durations, addresses, sizes.

Each parser accepts the written form SPEC.md documents and raises ValueError with a
message meant for the operator (it ends up after `FILE:LINE:`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Return seconds for "500ms", "5s", "2m", "1h", "1d" (also "1.5s").

    Numbers are refused: a bare 5000 means milliseconds to an HAProxy user and seconds to
    others, so the unit must be written.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'expected a duration string such as "500ms", "5s" or "2m", got {value!r}')
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f'invalid duration {value!r}: use a number and a unit (us, ms, s, m, h, d), e.g. "5s"')
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_positive_duration(value: Any) -> float:
    """parse_duration, refusing zero: for the pauses between repeated work (check and
    agent intervals, the stats page's polls) and lifetimes that must outlast a moment
    (an ejection's cooldown, a stick-table entry), where 0 would spin a core or undo the
    setting. Timeouts are not positive durations: "0s" there means "no limit"."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """Return bytes for an integer or a string such as "64k", "10m", "1g" (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str) and (match := _SIZE.match(value)):
        shift = 10 * " kmg".index(match.group(2).lower() or " ")
        return int(match.group(1)) << shift
    raise ValueError(f'invalid size {value!r}: use bytes or a string such as "64k", "10m"')


@dataclass(frozen=True, slots=True)
class Address:
    """Where to listen or connect: a host and port, or a unix socket path.

    host "" means every address (":8080"); for a unix socket, port is 0 and path is set.
    """

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def family_is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(value: Any) -> Address:
    """Accept "127.0.0.1:8080", "[::1]:8080", ":8080", "host.name:80" and "unix:/path"."""
    if isinstance(value, Address):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f'expected an address such as "127.0.0.1:8080", got {value!r}')
    if value.startswith("unix:"):
        path = value[5:]
        if not path:
            raise ValueError(f"invalid address {value!r}: unix: needs a path")
        return Address(path=path)
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f'invalid address {value!r}: write IPv6 as "[::1]:8080"')
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f'invalid address {value!r}: a port is required, e.g. "{value}:80"')
        if ":" in host:
            raise ValueError(f'invalid address {value!r}: write IPv6 as "[::1]:8080"')
        if host and not re.fullmatch(r"[A-Za-z0-9.\-_]+", host):
            raise ValueError(f"invalid address {value!r}: bad host {host!r}")
        if host and re.fullmatch(r"[\d.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"invalid address {value!r}: {host!r} is not an IPv4 address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid address {value!r}: port must be a number from 0 to 65535")
    return Address(host=host, port=int(port_text))


def parse_network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Accept "10.0.0.0/8", "192.0.2.7" (a single host) or "::1"."""
    if not isinstance(value, str):
        raise ValueError(f"expected an address or CIDR network, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected CIDR such as 10.0.0.0/8") from None


Duration = Annotated[float, PlainValidator(parse_duration), PlainSerializer(format_duration)]
PositiveDuration = Annotated[float, PlainValidator(parse_positive_duration), PlainSerializer(format_duration)]
Size = Annotated[int, PlainValidator(parse_size)]
AddressValue = Annotated[Address, PlainValidator(parse_address), PlainSerializer(str)]
Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, PlainValidator(parse_network), PlainSerializer(str)]
