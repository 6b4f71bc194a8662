"""A request as rule conditions see it (route.rules.RequestView), for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from balancer.route.rules import NumericIP, numeric_ip


@dataclass
class View:
    """A request as conditions see it (the RequestView protocol)."""

    path: bytes = b"/"
    query: bytes = b""
    host: bytes = b"www.example"
    method: bytes = b"GET"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    hop_headers: list[tuple[bytes, bytes]] | None = None
    port: int = 80
    tls: bool = False
    client: str = "10.0.0.1"

    def source_ip(self) -> NumericIP | None:
        return numeric_ip(self.client)

    def local_port(self) -> int:
        return self.port

    def over_tls(self) -> bool:
        return self.tls
