"""The accepted socket of a TLS client connection, which knows its OpenSSL connection.

Python's `ssl` serves a TLS channel (net.tls_channel `SocketChannel`: a build without
net/_tls.c, or an ssl.SSLContext given) with `SSLContext._wrap_socket`, the C constructor of
OpenSSL's connection object, rather than `wrap_socket`: the SSLSocket that `wrap_socket`
builds is interpreted Python (a socket duplicated into a new object, with getsockopt
SO_TYPE, getpeername, getsockname and an ioctl) that the channel never uses, about half the
Python of accepting a TLS connection. OpenSSL's object refers to its socket weakly, and
hands that socket to the SNI callback as "the connection", whose `context` the callback sets
to choose a certificate (net.tls `frontend_context`): this socket type, a plain
`socket.socket` otherwise, passes that `context` on to the OpenSSL object in `tls`.

It derives from `_socket.socket`, the C type, not from socket.py's `socket.socket`: that
class's `__init__` and `close` are interpreted Python, run once per connection each (and
its makefile and io reference counting are never used here). The C type has no weak
references of its own, which OpenSSL's object needs: `__weakref__` adds them, as socket.py
does. Interpreted on purpose: mypyc compiles no subclass of a C extension's socket type.
"""

from __future__ import annotations

import _socket
import ssl
from typing import Any


class TlsSocket(_socket.socket):
    __slots__ = ("__weakref__", "tls")

    tls: Any  # the OpenSSL connection object (`_ssl._SSLSocket`, untyped), set once wrapped

    @property
    def context(self) -> ssl.SSLContext:
        context: ssl.SSLContext = self.tls.context
        return context

    @context.setter
    def context(self, context: ssl.SSLContext) -> None:
        self.tls.context = context
