"""CPU per HPACK header block: our codec (balancer.proto.hpack_codec) against PyPI `hpack`.

Two operations, as an HTTP/2 frontend runs them per request:
- `decode`: a browser-like request block after the connection's first (ten fields: the
  stable ones one byte each from the dynamic table the first block filled; :path, cookie
  and referer Huffman-coded literals that change every request and do not enter the table,
  so the blocks can be decoded in any order). 64 different blocks, made with PyPI hpack's
  encoder (Huffman on, as browsers send) before the measured loop.
- `encode`: a typical response (six fields: :status, content-type, server, cache-control
  the same every time; date and content-length changing), 64 different ones, on one
  encoder. PyPI hpack encodes with Huffman on (its default) unless --pypi-raw.

Time per operation swings with the machine; count instructions for a figure that does not
(bench/README.md, "micro_hpack.py"):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/micro_hpack.py --op decode --count 2000
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/micro_hpack.py --op decode --count 12000

(the difference of the two `Collected` figures divided by 10,000). Usage:
    .venv/bin/python bench/micro_hpack.py [--op decode|encode] [--codec ours|pypi] [--count 100000] [--pypi-raw]
"""

from __future__ import annotations

import argparse
import time

import hpack

from balancer import native
from balancer.proto.hpack_codec import HpackDecoder, HpackEncoder

VARIANTS = 64
STABLE_REQUEST = [
    (b":method", b"GET"),
    (b":authority", b"www.example.com"),
    (b":scheme", b"https"),
    (
        b"user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"accept-language", b"en-US,en;q=0.9"),
]


def request_blocks() -> tuple[bytes, list[bytes]]:
    """The connection's first block, then VARIANTS later ones that leave the table alone."""
    encoder = hpack.Encoder()
    first = encoder.encode([*STABLE_REQUEST, (b":path", b"/"), (b"cookie", b"sid=0")])
    later = []
    for n in range(VARIANTS):
        varying = [
            hpack.NeverIndexedHeaderTuple(b":path", b"/catalog/item-%d?ref=home&page=%d" % (n * 7919, n)),
            hpack.NeverIndexedHeaderTuple(b"cookie", b"sid=%016x; theme=dark; consent=yes" % (n * 1000003)),
            hpack.NeverIndexedHeaderTuple(b"referer", b"https://www.example.com/catalog?page=%d" % n),
        ]
        later.append(encoder.encode([*STABLE_REQUEST[:3], *varying[:1], *STABLE_REQUEST[3:], *varying[1:]]))
    return first, later


def responses() -> list[list[tuple[bytes, bytes]]]:
    return [
        [
            (b":status", b"200"),
            (b"content-type", b"text/html; charset=utf-8"),
            (b"server", b"balancer"),
            (b"cache-control", b"private, max-age=0"),
            (b"date", b"Fri, 04 Dec 2026 20:%02d:%02d GMT" % (n // 60 % 60, n % 60)),
            (b"content-length", b"%d" % (1000 + 37 * n)),
        ]
        for n in range(VARIANTS)
    ]


def run(op: str, codec: str, count: int, pypi_raw: bool) -> float:
    """Seconds for `count` operations."""
    if op == "decode":
        first, later = request_blocks()
        if codec == "ours":
            ours = HpackDecoder()
            ours.decode(first)
            assert len(ours.decode(later[0])) == 10
            start = time.perf_counter()
            for i in range(count):
                ours.decode(later[i & (VARIANTS - 1)])
            return time.perf_counter() - start
        theirs = hpack.Decoder()
        theirs.decode(first, raw=True)
        start = time.perf_counter()
        for i in range(count):
            theirs.decode(later[i & (VARIANTS - 1)], raw=True)
        return time.perf_counter() - start
    heads = responses()
    if codec == "ours":
        encoder = HpackEncoder()
        start = time.perf_counter()
        for i in range(count):
            encoder.encode(heads[i & (VARIANTS - 1)])
        return time.perf_counter() - start
    pypi = hpack.Encoder()
    huffman = not pypi_raw
    start = time.perf_counter()
    for i in range(count):
        pypi.encode(heads[i & (VARIANTS - 1)], huffman=huffman)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("decode", "encode"), default="decode")
    parser.add_argument("--codec", choices=("ours", "pypi"), default="ours")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--pypi-raw", action="store_true", help="PyPI hpack encodes without Huffman")
    args = parser.parse_args()
    seconds = run(args.op, args.codec, args.count, args.pypi_raw)
    print(
        f"{args.codec} {args.op}: {seconds / args.count * 1e6:.2f} µs per block "
        f"({args.count} blocks; {native.describe()})"
    )


if __name__ == "__main__":
    main()
