"""What a hashing algorithm hashes: the backend's `hash_key`, taken from a request.

    src              the client's address
    uri              the path and query as sent
    url_param(name)  the value of one query parameter
    hdr(name)        the value of one header (first occurrence)
    cookie(name)     the value of one cookie
    5tuple           client address and port, frontend address and port, protocol

A request without the thing named (no such parameter, header or cookie) has no key; the
algorithm then balances it round robin, as HAProxy does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

KeyFunction = Callable[[Any], bytes | None]


def _param(query: bytes, name: bytes) -> bytes | None:
    for pair in query.split(b"&"):
        key, eq, value = pair.partition(b"=")
        if key == name and eq:
            return value
    return None


def _header(request: Any, name: bytes) -> bytes | None:
    for header_name, value in request.headers:
        if header_name.lower() == name:
            return bytes(value)
    return None


def _cookie(request: Any, name: bytes) -> bytes | None:
    for header_name, value in request.headers:
        if header_name.lower() == b"cookie":
            for part in value.split(b";"):
                key, eq, cookie_value = part.strip().partition(b"=")
                if key == name and eq:
                    return bytes(cookie_value)
    return None


def compile_hash_key(spec: str) -> KeyFunction:
    """A function from a request (or a TCP connection view) to its key bytes.

    The request needs `client_ip`/`client_port` (both modes); HTTP keys also read `url`,
    `query` and `headers`. `spec` was validated by the config loader.
    """
    if spec == "src":
        return lambda r: r.client_ip.encode()
    if spec == "5tuple":
        return lambda r: f"{r.client_ip}|{r.client_port}|{r.local_address}|tcp".encode()
    if spec == "uri":
        return lambda r: bytes(r.url)
    match = re.fullmatch(r"(url_param|hdr|cookie)\(([^()]+)\)", spec)
    if match is None:
        raise ValueError(f"invalid hash_key {spec!r}")
    kind, name = match.group(1), match.group(2).encode()
    if kind == "url_param":
        return lambda r: _param(r.query, name)
    if kind == "hdr":
        lower = name.lower()
        return lambda r: _header(r, lower)
    return lambda r: _cookie(r, name)
