"""HPACK for net.h2_session until proto.hpack_codec (our own codec) lands: the PyPI hpack
package behind that module's interface (HpackDecoder, HpackEncoder, HpackError,
HeaderListTooLarge), so that the switch is one import.
"""

from __future__ import annotations

import hpack


class HpackError(Exception):
    """A header block that cannot be decoded: connection error COMPRESSION_ERROR."""


class HeaderListTooLarge(HpackError):
    """The decoded list is past max_header_list_size (the table is still in step)."""


class HpackDecoder:
    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 65536) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.decoder.max_allowed_table_size = max_table_size
        self.max_header_list_size = max_header_list_size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        self.decoder.max_header_list_size = self.max_header_list_size
        try:
            return [(bytes(n), bytes(v)) for n, v in self.decoder.decode(block, raw=True)]
        except hpack.OversizedHeaderListError as exc:
            raise HeaderListTooLarge(str(exc)) from exc
        except Exception as exc:
            raise HpackError(str(exc)) from exc


class HpackEncoder:
    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def set_max_table_size(self, size: int) -> None:
        self.encoder.header_table_size = size

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.encoder.encode(headers))
