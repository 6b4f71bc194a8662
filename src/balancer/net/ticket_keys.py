"""The keys of TLS session tickets: a `tls.ticket_keys` file, and the keys a master shares.

A ticket is the client's copy of its session, encrypted under a key of the server's; a
returning client shows it and resumes without a full handshake. A process that makes its
own key resumes only the tickets it issued itself: a client whose next connection the
kernel hands to another worker, or that comes back after a reload, pays a full handshake.
So the master makes the keys and hands them to every worker it starts (on a pipe whose
descriptor it names in BALANCER_TICKET_KEYS_FD): any worker resumes any worker's tickets.
At each reload it adds a new key, which encrypts from then on, and keeps the one before it
for decrypting, so that the tickets issued before the reload still resume; older ones do
not (a key lives two generations: the forward secrecy that a key's lifetime bounds).

Nodes behind one address (ECMP, DNS) need the same keys, and a key rotation they agree
on: `tls.ticket_keys` names a file in HAProxy's `tls-ticket-keys` format, one key per
line, base64 of 48 bytes (a 16-byte name, an AES-128 key and an HMAC-SHA256 key of 16
bytes) or 80 (the name, an AES-256 key and an HMAC key of 32 bytes), as `openssl rand 80
| openssl base64 -A` makes; empty lines and lines starting with `#` are skipped. As in
HAProxy, the last three keys serve and the penultimate one encrypts (the only one, when
the file holds one): a rotation appends a key to the file on every node, then reloads
them, and each node decrypts the new key's tickets before any of them issues one.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Final

KEY_SIZES: Final = (48, 80)
# How many of a file's last keys serve (HAProxy's TLS_TICKETS_NO).
SERVING: Final = 3
# How many generations of the master's keys serve (the current one and the one before).
MASTER_SERVING: Final = 2
ENV_FD: Final = "BALANCER_TICKET_KEYS_FD"


@dataclass(frozen=True)
class TicketKeys:
    """Keys that decrypt tickets, and the index of the one that encrypts new ones."""

    keys: tuple[bytes, ...]
    encrypt: int

    def encode(self) -> bytes:
        """The keys in the file format, the encrypting one last but one (or alone)."""
        keys = list(self.keys)
        keys.append(keys.pop(self.encrypt))  # now last
        if len(keys) > 1:
            keys[-1], keys[-2] = keys[-2], keys[-1]
        return b"".join(base64.b64encode(key) + b"\n" for key in keys)


def parse_ticket_keys(text: str) -> TicketKeys:
    """The keys of a file in HAProxy's format (above). Raises ValueError naming the line
    of a key that is not base64 of 48 or 80 bytes, or that the file holds none."""
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {number}: not base64") from None
        if len(key) not in KEY_SIZES:
            raise ValueError(
                f"line {number}: a key of {len(key)} bytes; a key is 48 bytes (AES-128) or 80 (AES-256), "
                "as `openssl rand 80 | openssl base64 -A` makes"
            )
        keys.append(key)
    if not keys:
        raise ValueError("no key: one per line, base64 of 48 or 80 bytes")
    serving = tuple(keys[-SERVING:])
    return TicketKeys(serving, max(len(serving) - 2, 0))


def read_ticket_keys(path: str) -> TicketKeys:
    """The keys of the file at `path`. Raises OSError, or ValueError naming the file's line."""
    with open(path, encoding="ascii", errors="replace") as file:
        text = file.read()
    try:
        return parse_ticket_keys(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def first_keys() -> TicketKeys:
    """A master's keys at its start: one, made at random."""
    return TicketKeys((os.urandom(80),), 0)


def next_keys(keys: TicketKeys) -> TicketKeys:
    """The keys of the generation after one with `keys`: a new key encrypts, the one that
    encrypted before still decrypts, older ones go."""
    kept = keys.keys[keys.encrypt]
    return TicketKeys((kept, os.urandom(80)), MASTER_SERVING - 1)


def pipe_to_worker(keys: TicketKeys) -> int:
    """A descriptor to pass to a worker (named in ENV_FD), from which it reads `keys`; the
    caller closes it once the worker is started."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, keys.encode())  # a few hundred bytes: the pipe holds them
    finally:
        os.close(write_end)
    return read_end


# This worker's keys from its master, when it has one (received at start).
_from_master: TicketKeys | None = None


def receive_from_master() -> None:
    """Read the keys the master passed (ENV_FD), once, at a worker's start; nothing if
    there is no such descriptor (a process run without a master)."""
    global _from_master
    fd_text = os.environ.pop(ENV_FD, "")
    if not fd_text:
        return
    fd = int(fd_text)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    _from_master = parse_ticket_keys(b"".join(chunks).decode("ascii"))


def from_master() -> TicketKeys | None:
    """The keys the master passed to this worker, or None."""
    return _from_master
