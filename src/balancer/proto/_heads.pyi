# proto/_heads.c: one whole plain request head in one call, or None (httptools then parses it).
# (method, url, version, headers, hop, host, host_count, header_bytes, block): see _heads.c.
ParsedHead = tuple[
    bytes, bytes, str, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]] | None, bytes, int, int, bytes
]

def parse_head(data: bytes) -> ParsedHead | None: ...
