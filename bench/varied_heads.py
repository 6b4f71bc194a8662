"""The browser-like request heads of bench/varied.lua, in Python: every one different (path,
query, referer, cookie vary with the counter), about ten headers. bench/soak.py sends them
over sockets, bench/micro_http.py feeds them to a session in memory."""

from __future__ import annotations

PAGES = ("/", "/products", "/products/list", "/cart", "/account/orders", "/search", "/static/app.js", "/api/v1/items")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
)


def request_head(counter: int, close: bool = False) -> bytes:
    """varied.lua's request number `counter`; with `close`, it asks for Connection: close."""
    page = PAGES[counter % len(PAGES)]
    referer = PAGES[(counter + 3) % len(PAGES)]
    session = f"{counter * 2654435761 % 4294967296:016x}"
    return (
        f"GET {page}?id={counter}&q=item{counter * 7919 % 100000} HTTP/1.1\r\n"
        "Host: shop.example.com\r\n"
        f"User-Agent: {AGENTS[counter % len(AGENTS)]}\r\n"
        "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
        "Accept-Language: en-US,en;q=0.5\r\n"
        "Accept-Encoding: gzip, deflate, br\r\n"
        f"Referer: https://shop.example.com{referer}?from={counter - 1}\r\n"
        f"Cookie: session={session}; theme=light; cart={counter % 97}\r\n"
        "Cache-Control: no-cache\r\n"
        "Sec-Fetch-Mode: navigate\r\n"
        f"{'Connection: close' + chr(13) + chr(10) if close else ''}"
        "\r\n"
    ).encode()
