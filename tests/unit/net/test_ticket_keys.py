"""net.ticket_keys: HAProxy's tls-ticket-keys file read as HAProxy reads it (the last three
keys serve, the penultimate encrypts), refused by line; the master's keys from one
generation to the next; what net/_tls.c refuses. (Resumption across workers, reloads and
nodes: tests/e2e/test_e2e_tls_ticket_keys.py.)"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from tests.support.tls import make_certificate

from balancer.config.model import FrontendTLS
from balancer.net import tls as tls_module
from balancer.net.ticket_keys import (
    TicketKeys,
    first_keys,
    next_keys,
    parse_ticket_keys,
    read_ticket_keys,
)
from balancer.net.tls import INTERMEDIATE_CIPHERS, INTERMEDIATE_SUITES, TicketKeysError, frontend_ticket_keys


def line(key: bytes) -> str:
    return base64.b64encode(key).decode() + "\n"


def test_the_penultimate_of_the_last_three_keys_encrypts() -> None:
    keys = [os.urandom(80) for _ in range(5)]
    parsed = parse_ticket_keys("".join(line(key) for key in keys))
    assert parsed.keys == tuple(keys[-3:])
    assert parsed.keys[parsed.encrypt] == keys[-2]


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_keys_serve_all_and_the_penultimate_or_only_one_encrypts(count: int) -> None:
    keys = [os.urandom(48) for _ in range(count)]
    parsed = parse_ticket_keys("".join(line(key) for key in keys))
    assert parsed.keys == tuple(keys)
    assert parsed.keys[parsed.encrypt] == keys[0]


def test_comments_and_empty_lines_are_skipped_and_sizes_mix() -> None:
    small, large = os.urandom(48), os.urandom(80)
    parsed = parse_ticket_keys(f"# rotated weekly\n\n{line(small)}  \n{line(large)}")
    assert parsed.keys == (small, large)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (line(os.urandom(48)) + line(os.urandom(32)), "line 2: a key of 32 bytes"),
        ("# keys\n" + line(os.urandom(80)) + "not base64!\n", "line 3: not base64"),
        ("# nothing but a comment\n\n", "no key"),
    ],
)
def test_a_bad_file_is_refused_by_its_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_ticket_keys(text)


def test_read_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tickets.key"
    path.write_text(line(os.urandom(16)))
    with pytest.raises(ValueError, match=f"{path}: line 1"):
        read_ticket_keys(str(path))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_encoded_keys_read_back_the_same(count: int) -> None:
    keys = TicketKeys(tuple(os.urandom(80) for _ in range(count)), count - 1)
    again = parse_ticket_keys(keys.encode().decode())
    assert set(again.keys) == set(keys.keys)
    assert again.keys[again.encrypt] == keys.keys[keys.encrypt]


def test_each_generation_encrypts_with_a_new_key_and_decrypts_the_last_one() -> None:
    first = first_keys()
    second = next_keys(first)
    third = next_keys(second)
    assert len(first.keys) == 1
    assert second.keys[second.encrypt] not in first.keys
    assert first.keys[first.encrypt] in second.keys
    assert second.keys[second.encrypt] in third.keys
    assert first.keys[0] not in third.keys  # two generations on: its tickets make full handshakes


def test_a_frontend_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    key = os.urandom(80)
    (tmp_path / "tickets.key").write_text(line(key))
    tls = FrontendTLS(cert=["site.pem"], ticket_keys="tickets.key")
    keys = frontend_ticket_keys(tls, str(tmp_path))
    assert keys is not None and keys.keys == (key,)
    with pytest.raises(TicketKeysError, match="No such file"):
        frontend_ticket_keys(FrontendTLS(cert=["site.pem"], ticket_keys="missing.key"), str(tmp_path))


@pytest.mark.parametrize(
    ("keys", "encrypt", "message"),
    [
        ((os.urandom(32),), 0, "48 or 80 bytes"),
        ((os.urandom(48), os.urandom(48)), 2, "ticket_encrypt"),
        ((os.urandom(48),), -1, "ticket_encrypt"),
    ],
)
def test_the_c_context_refuses_keys_it_cannot_use(
    tmp_path: Path, keys: tuple[bytes, ...], encrypt: int, message: str
) -> None:
    if tls_module._tls is None:
        pytest.skip("net/_tls.c is not built here (BALANCER_PURE=1, or no OpenSSL headers)")
    certificate = make_certificate(tmp_path, "a.example")
    with pytest.raises(ValueError, match=message):
        tls_module._tls.ServerContext(
            str(certificate.pem),
            None,
            INTERMEDIATE_CIPHERS,
            INTERMEDIATE_SUITES,
            False,
            (),
            None,
            0,
            True,
            False,
            keys,
            encrypt,
        )
