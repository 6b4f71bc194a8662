# proto/_heads.c: one whole plain request head in one call, or None (httptools then parses it).
# (method, url, version, headers, hop, host, host_count, header_bytes, block, fields): see
# _heads.c (headers is None when the block holds them).
ParsedHead = tuple[
    bytes, bytes, str, list[tuple[bytes, bytes]] | None, list[tuple[bytes, bytes]] | None, bytes, int, int, bytes, int
]

def parse_head(data: bytes) -> ParsedHead | None: ...

# An HTTP/2 request's header list (the stream ended with it) as parse_head reads the HTTP/1.1
# head proto.h2_message.request_head writes for it, or None (that head is then parsed).
def http2_head(headers: list[tuple[bytes, bytes]]) -> ParsedHead | None: ...
