"""Which modules are compiled to C with mypyc, and whether this process runs them compiled.

The data plane (everything a request or a connection runs through) is plain, typed Python
that mypyc compiles into C extension modules at install time: the same source, a quarter
of the CPU per request (bench/micro_http.py). Its hot spots are written for the compiler:
loops over bytes and direct attribute access, which are cheap compiled and slow
interpreted, rather than method calls, which cost a lookup either way.

Python prefers an extension module over the .py beside it, so in a development checkout
(`pip install -e`, modules built in place) a module edited after its build would silently
run old code: `stale()` names those, and the test suite refuses to start with any
(`make native` rebuilds).

`BALANCER_PURE=1` at install time builds without compiling (no C compiler needed); the
product then runs the same code interpreted, about four times slower per request.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

# mypyc puts the compiled code of all modules in one library, `<GROUP>__mypyc`; each
# module's own extension is a small shim that imports from it.
GROUP = "balancer_native"
# Paths relative to src/, read by setup.py: keep this module free of package imports.
COMPILED = (
    "balancer/lb/agent_load.py",
    "balancer/lb/base.py",
    "balancer/lb/common.py",
    "balancer/lb/first.py",
    "balancer/lb/keyhash.py",
    "balancer/lb/least_time.py",
    "balancer/lb/least_traffic.py",
    "balancer/lb/leastconn.py",
    "balancer/lb/maglev.py",
    "balancer/lb/p2c.py",
    "balancer/lb/pool.py",
    "balancer/lb/ring.py",
    "balancer/lb/roundrobin.py",
    "balancer/lb/static_rr.py",
    "balancer/net/acceptor.py",
    "balancer/net/context.py",
    "balancer/net/deadline.py",
    "balancer/net/gate.py",
    "balancer/net/h2_session.py",
    "balancer/net/h2_stream.py",
    "balancer/net/http_session.py",
    "balancer/net/linger.py",
    "balancer/net/outbox.py",
    "balancer/net/peer.py",
    "balancer/net/plain_connect.py",
    "balancer/net/plain_transport.py",
    "balancer/net/poller.py",
    "balancer/net/request.py",
    "balancer/net/response_sink.py",
    "balancer/net/socket_calls.py",
    "balancer/net/tcp_session.py",
    "balancer/net/tls_transport.py",
    "balancer/net/upstream.py",
    "balancer/net/write_limits.py",
    "balancer/proto/h2_connection.py",
    "balancer/proto/h2_message.py",
    "balancer/proto/hpack_codec.py",
    "balancer/proto/http1.py",
    "balancer/proto/proxy.py",
    "balancer/route/client_limits.py",
    "balancer/route/hashkey.py",
    "balancer/route/persistence.py",
    "balancer/route/rules.py",
    "balancer/runtime/node_count.py",
    "balancer/runtime/client_table.py",
    "balancer/runtime/record.py",
    "balancer/runtime/state.py",
    "balancer/stats/accesslog.py",
)
# Modules written in C (module name, source relative to src/): loops mypyc cannot make
# fast enough because they box every integer; each has a Python fallback beside it
# (proto/_heads' is httptools: a build without it parses every request head there).
C_EXTENSIONS = (
    ("balancer.lb._tables", "balancer/lb/_tables.c"),
    ("balancer.net._nowait", "balancer/net/_nowait.c"),
    ("balancer.net._tls", "balancer/net/_tls.c"),
    ("balancer.proto._h2_fields", "balancer/proto/_h2_fields.c"),
    ("balancer.proto._heads", "balancer/proto/_heads.c"),
    ("balancer.proto._huffman", "balancer/proto/_huffman.c"),
    ("balancer.stats._logline", "balancer/stats/_logline.c"),
)


# The libraries a C module links with, and the header that must say a version at least
# this one (the `# define NAME N` line of a header); built only where it does (libssl-dev:
# `make system-deps` installs it), else its fallback serves.
C_LIBRARIES = {"balancer.net._tls": (("ssl", "crypto"), ("openssl/opensslv.h", "OPENSSL_VERSION_MAJOR", 3))}


def module_names() -> list[str]:
    return [path.removesuffix(".py").replace("/", ".") for path in COMPILED]


def _origin(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


def compiled() -> list[str]:
    """The data-plane modules this interpreter loads as C extensions."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [name for name in module_names() if (_origin(name) or "").endswith(suffixes)]


# An installed wheel writes a module's .py and .so within moments of each other, in either order.
_STALE_AFTER = 2.0  # seconds


def stale() -> list[str]:
    """Compiled modules whose .py (or .c) source changed after they were built."""
    library = _origin(f"{GROUP}__mypyc")
    library_built = os.path.getmtime(library) if library is not None else 0.0
    found = []
    for name, path in C_EXTENSIONS:
        origin = _origin(name)
        source = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), path)
        built = os.path.getmtime(origin) if origin is not None else 0.0
        if origin is not None and os.path.exists(source) and os.path.getmtime(source) > built + _STALE_AFTER:
            found.append(name)
    for name in compiled():
        origin = _origin(name)
        assert origin is not None
        built = max(os.path.getmtime(origin), library_built)  # a rebuild may leave a shim as it was
        source = os.path.join(os.path.dirname(origin), name.rpartition(".")[2] + ".py")
        if os.path.exists(source) and os.path.getmtime(source) > built + _STALE_AFTER:
            found.append(name)
    return found


def describe() -> str:
    """One line for the startup log: how the data plane runs."""
    done = compiled()
    if not done:
        return "data plane: interpreted (built with BALANCER_PURE=1 or without a C compiler)"
    if len(done) < len(COMPILED):
        return f"data plane: {len(done)} of {len(COMPILED)} modules compiled (mypyc)"
    return "data plane: compiled (mypyc)"
