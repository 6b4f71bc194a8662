"""HTTP Basic credentials (RFC 7617) checked against a userlist (HAProxy `userlist`).

Passwords are either plain (compared in constant time) or crypt(3) hashes verified by the
system's libcrypt ($1$, $5$, $6$, and bcrypt $2b$/$2y$ where libcrypt has it). A crypt of
$6$ costs milliseconds, so a verified (user, password) pair is remembered, a bounded number
of them, per userlist: a browser resends the same credentials on every request.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import hmac
from collections.abc import Iterable, Iterator

_REMEMBERED = 1024


def _crypt_libraries() -> Iterator[str]:
    # The soname of glibc systems first: find_library runs `ldconfig -p` in a subprocess,
    # which every worker start would pay.
    yield "libcrypt.so.1"
    name = ctypes.util.find_library("crypt")
    if name is not None:
        yield name


def _load_crypt() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    for name in _crypt_libraries():
        with contextlib.suppress(OSError, AttributeError):
            function = ctypes.CDLL(name).crypt
            function.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            function.restype = ctypes.c_char_p
            return function
    return None


_crypt = _load_crypt()


def crypt(password: bytes, salt: bytes) -> bytes | None:
    """libcrypt's crypt(3); None when the hash method is not supported here."""
    if _crypt is None:
        return None
    result: bytes | None = _crypt(password, salt)
    if not result or result.startswith(b"*"):
        return None
    return result


def hash_supported(password_hash: str) -> bool:
    """Whether this system can verify `password_hash` (a crypt of a test word succeeds)."""
    if not password_hash.startswith(("$1$", "$5$", "$6$", "$2b$", "$2y$", "$2a$")):
        return False
    return crypt(b"probe", password_hash.encode()) is not None


def basic_credentials(authorization: bytes) -> tuple[bytes, bytes] | None:
    """(user, password) of an `Authorization: Basic ...` value; None for anything else."""
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


class Userlist:
    """The users of one [[userlist]]: name -> ("plain" | "hash", secret)."""

    __slots__ = ("_users", "_verified")

    def __init__(self, users: Iterable[tuple[str, str | None, str | None]]) -> None:
        """`users`: (name, plain password or None, crypt hash or None)."""
        self._users: dict[bytes, tuple[bool, bytes]] = {}
        for name, password, password_hash in users:
            if password is not None:
                self._users[name.encode()] = (False, password.encode())
            elif password_hash is not None:
                self._users[name.encode()] = (True, password_hash.encode())
        self._verified: set[tuple[bytes, bytes]] = set()

    def check(self, authorization: bytes) -> bool:
        """Whether an Authorization header value carries valid credentials of this list."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        entry = self._users.get(user)
        if entry is None:
            return False
        hashed, secret = entry
        if not hashed:
            return hmac.compare_digest(password, secret)
        if credentials in self._verified:
            return True
        result = crypt(password, secret)
        if result is None or not hmac.compare_digest(result, secret):
            return False
        if len(self._verified) >= _REMEMBERED:
            self._verified.clear()
        self._verified.add(credentials)
        return True
