"""TLS contexts: terminating client connections on a frontend, and connecting to servers.

Frontend: every `tls.cert` file is a PEM holding a certificate chain and its key (as
HAProxy's `crt`); a `tls.cert` entry naming a directory stands for every `*.pem` and `*.crt`
file in it, by name (HAProxy `crt DIR`), a file without a key taking it from the `.key`
file of the same stem. The first is the default; the others are chosen by SNI from the names in
their certificate (subjectAltName DNS entries, else the CN, wildcards one label deep).
Where net/_tls.c is built the contexts are its ServerContexts (OpenSSL called from C, see
there), else Python's ssl.SSLContexts; the settings are the same. Defaults follow
Mozilla's "intermediate" profile: TLS 1.2 and 1.3, forward-secret AEAD ciphers for 1.2, no
compression, no renegotiation; session tickets stay on (OpenSSL's default) for resumption
unless `tls.tickets` is false (SSL_OP_NO_TICKET: sessions are then resumed from a cache,
and no ticket key encrypts them). The tickets' keys are the `tls.ticket_keys`
file's, else the master's, shared by its workers (net.ticket_keys); without tickets the
sessions are kept in the master's cache, shared by its workers too (net.session_cache).
Python's `ssl` does neither: each process has its own key and its own cache. A session is
bound to its frontend and the checks it passed (`session_context`). A reload builds new
contexts, so renewed certificates take effect on reload while connections already
established keep theirs.

Servers: `ssl = true` verifies the server's certificate against `ca_file` (or the system
store) and the name in `sni` (or the server's host).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path
from typing import Any

from balancer.config.load import certificate_files
from balancer.config.model import FrontendTLS, Server
from balancer.net import session_cache
from balancer.net.ticket_keys import TicketKeys, from_master, read_ticket_keys
from balancer.net.tls_channel import FrontendContext

try:
    from balancer.net import _tls
except ImportError:  # not built: Python's ssl serves (net.tls_channel)
    _tls = None  # type: ignore[assignment]

# Mozilla intermediate (v5.7) cipher list for TLS 1.2.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)


# Mozilla's TLS 1.3 suites in its order (OpenSSL's default puts AES-256 first), chosen by the
# server: AES-128-GCM is RFC 8446's mandatory suite, of the strength of the X25519 and P-256
# exchanges, and its SHA-256 key schedule runs on the CPU's SHA instructions where AES-256's
# SHA-384 has none (HAProxy's handshakes per core: +1-3% when the client picks it). A client
# that lists ChaCha20 first (no AES instructions) gets it. Python's `ssl` cannot set these:
# workers get them from net/openssl.cnf, which must name the same list, and a frontend's own
# `tls.ciphersuites` needs net/_tls.c (see `unsettable`).
INTERMEDIATE_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


# RFC 7919's ffdhe2048 for the DHE suites above (net/_tls.c makes the same group itself):
# without a group OpenSSL never chooses one.
FFDHE2048 = str(Path(__file__).with_name("ffdhe2048.pem"))


# Mozilla's key-exchange groups, as net/openssl.cnf gives them to every worker.
INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"


def unsettable(tls: FrontendTLS, base_dir: str = ".") -> list[tuple[str, str, str]]:
    """The keys of `tls` this build cannot serve, as (key, what it sets, what to do
    instead, or ""): net/_tls.c's contexts take them all; Python's `ssl` has no call for a
    context's TLS 1.3 suites, key-exchange groups (it takes the process's OPENSSL_CONF),
    session ticket keys or a stapled OCSP response."""
    if _tls is not None:
        return []
    found = []
    for pem in [file for cert in tls.cert for file in _certificate_files(cert, base_dir)]:
        if _ocsp_file(pem):
            found.append(("cert", f"the OCSP response to staple ({pem}.ocsp)", "remove that file"))
    if tls.ciphersuites not in ("", INTERMEDIATE_SUITES):
        found.append(
            ("ciphersuites", "a frontend's TLS 1.3 suites", "set Ciphersuites for every worker in an OPENSSL_CONF file")
        )
    if tls.curves not in ("", INTERMEDIATE_GROUPS):
        found.append(
            ("curves", "a frontend's key-exchange groups", "set Groups for every worker in an OPENSSL_CONF file")
        )
    if tls.ticket_keys:
        found.append(("ticket_keys", "session ticket keys", ""))
    return found


class TicketKeysError(OSError):
    """A `tls.ticket_keys` file that cannot be read or holds no valid key."""


def frontend_ticket_keys(tls: FrontendTLS, base_dir: str = ".") -> TicketKeys | None:
    """The keys of the frontend's tickets: its file's, else the master's (None: OpenSSL's
    own, in a process without a master). Raises TicketKeysError."""
    if not tls.ticket_keys:
        return from_master()
    try:
        return read_ticket_keys(_resolve(tls.ticket_keys, base_dir))
    except (OSError, ValueError) as exc:
        raise TicketKeysError(f"cannot load ticket keys: {exc}") from None


def session_context(name: str, tls: FrontendTLS, base_dir: str) -> bytes:
    """What a frontend's sessions are bound to (OpenSSL's session id context, 32 bytes): its
    name and the settings a resumed session skips the checks of. Every worker shares ticket
    keys, and frontends share them too: without this a session made on one frontend would
    resume on another that verifies client certificates, and skip that check; a reload that
    changes them (the client CAs' file included) makes earlier sessions make a full
    handshake."""
    settings = [name, tls.verify_client, tls.min_version, tls.ciphers, tls.ciphersuites]
    policy = hashlib.sha256("\0".join(settings).encode())
    if tls.client_ca:
        try:  # the CAs themselves: a session verified against replaced ones resumes no more
            with open(_resolve(tls.client_ca, base_dir), "rb") as file:
                policy.update(file.read())
        except OSError:
            pass  # loading the context reports it
    return policy.digest()


def _resolve(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else str(Path(base_dir) / path)


def certificate_names(pem_path: str) -> list[str]:
    """DNS names a certificate is for: its subjectAltName DNS entries, else its CN."""
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(pem_path)  # type: ignore[attr-defined]
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        for rdn in decoded.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    names.append(value)
    return [name.lower() for name in names]


def _certificate_files(cert: str, base_dir: str) -> list[str]:
    """The files a `tls.cert` entry stands for: itself, or the certificates of a directory."""
    path = _resolve(cert, base_dir)
    if os.path.isdir(path):
        return [str(file) for file in certificate_files(Path(path))]
    return [path]


def _ocsp_file(pem: str) -> str | None:
    """The OCSP response beside a certificate file, to staple (HAProxy's `CERT.ocsp`)."""
    ocsp = pem + ".ocsp"
    return ocsp if os.path.isfile(ocsp) else None


def _key_file(pem: str) -> str | None:
    """The `.key` beside a certificate file that holds no private key itself (HAProxy's rule)."""
    with open(pem, "rb") as file:
        if b"PRIVATE KEY-----" in file.read():
            return None
    key = os.path.splitext(pem)[0] + ".key"
    return key if os.path.isfile(key) else None


def _one_context(
    tls: FrontendTLS, pem: str, base_dir: str, keys: TicketKeys | None, bound_to: bytes
) -> FrontendContext:
    if _tls is not None:
        verify = {"none": 0, "optional": 1, "required": 2}[tls.verify_client]
        return _tls.ServerContext(
            pem,
            _key_file(pem),
            tls.ciphers or INTERMEDIATE_CIPHERS,
            tls.ciphersuites or INTERMEDIATE_SUITES,
            tls.min_version == "1.3",
            tuple(tls.alpn),
            _resolve(tls.client_ca, base_dir) if verify else None,
            verify,
            tls.tickets,
            tls.prefer_client_ciphers,
            keys.keys if keys is not None else (),
            keys.encrypt if keys is not None else 0,
            tls.curves or None,
            bound_to,
            None if tls.tickets else session_cache.from_master(),
            _ocsp_file(pem),
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.set_ciphers(tls.ciphers or INTERMEDIATE_CIPHERS)
    context.load_dh_params(FFDHE2048)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not tls.tickets:
        context.options |= ssl.OP_NO_TICKET
    if tls.prefer_client_ciphers:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(pem, _key_file(pem))
    if tls.alpn:
        context.set_alpn_protocols(tls.alpn)
    if tls.verify_client != "none":
        context.load_verify_locations(_resolve(tls.client_ca, base_dir))
        context.verify_mode = ssl.CERT_REQUIRED if tls.verify_client == "required" else ssl.CERT_OPTIONAL
    return context


class AlertingSSLObject(ssl.SSLObject):
    """The TLS object of a client connection, which sends the alert of a refused handshake.

    The event loop's SSL protocol (uvloop's, as asyncio's) closes the transport on a failed
    handshake without writing what OpenSSL queued: the alert that tells the client why
    (protocol_version for TLS 1.0, handshake_failure for no common cipher), so an old client
    sees a bare close (RFC 8446 6.2 wants the alert). Set as the context's
    `sslobject_class`, it reports the first failure as "want read": the loop then writes
    the queued alert and waits; the client, told, closes, or the handshake timeout does,
    and a later call raises the failure as it was.
    """

    _failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        failure = self._failure
        if failure is not None:
            raise failure
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._failure = exc
            raise ssl.SSLWantReadError("the alert goes out first") from None


def frontend_context(tls: FrontendTLS, base_dir: str = ".", name: str = "") -> FrontendContext:
    """The listening context (net/_tls.c's ServerContext where it is built, else an
    ssl.SSLContext), with SNI choosing among the configured certificates. Raises OSError
    naming a file that cannot be loaded (TicketKeysError for `tls.ticket_keys`)."""
    by_name: dict[str, FrontendContext] = {}
    default: FrontendContext | None = None
    keys = frontend_ticket_keys(tls, base_dir)
    bound_to = session_context(name, tls, base_dir)
    for pem in [file for cert in tls.cert for file in _certificate_files(cert, base_dir)]:
        try:
            context = _one_context(tls, pem, base_dir, keys, bound_to)
            names = certificate_names(pem)
        except (OSError, ssl.SSLError) as exc:
            raise OSError(f"cannot load certificate {pem}: {exc}") from None
        default = default or context
        for name in names:
            by_name.setdefault(name, context)
    assert default is not None
    several = len(by_name) > 1 or len(set(by_name.values())) > 1
    if not isinstance(default, ssl.SSLContext):
        if several:
            default.choose_by_name(by_name)
        return default

    def choose(connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower()
        context = by_name.get(name)
        if context is None and "." in name:
            context = by_name.get("*." + name.split(".", 1)[1])
        if context is not None:
            connection.context = context

    if several:
        default.sni_callback = choose
    default.sslobject_class = AlertingSSLObject
    return default


def server_context(server: Server, base_dir: str = ".") -> ssl.SSLContext:
    """The context for connecting to `server` with `ssl = true`."""
    cafile = _resolve(server.ca_file, base_dir) if server.ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
