# proto/_heads.c: one whole plain request head in one call, or None (httptools then parses it).
# (method, url, version, headers, plain, host, host_count, header_bytes, block_start): see _heads.c.
ParsedHead = tuple[bytes, bytes, str, list[tuple[bytes, bytes]], bool, bytes, int, int, int]

def parse_head(data: bytes) -> ParsedHead | None: ...
