"""One active check against one server: TCP connect, an HTTP request, or an agent query.

Each probe returns (ok, detail) and never raises: a refused connection, a timeout or a
bad answer is a failed check with a detail the state-change log line can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

from balancer.config.model import Check
from balancer.config.values import Address
from balancer.proto.agent import AgentReply, AgentReplyError, parse_agent_reply

Result = tuple[bool, str]


async def _open(
    address: Address, timeout: float, tls: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # a health check asks "does it answer", not "who is it"
    if address.is_unix:
        connecting = asyncio.open_unix_connection(address.path, ssl=context)
    else:
        connecting = asyncio.open_connection(address.host, address.port, ssl=context)
    return await asyncio.wait_for(connecting, timeout)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def tcp_check(address: Address, timeout: float) -> Result:
    try:
        _, writer = await _open(address, timeout)
    except (OSError, TimeoutError) as exc:
        return (False, f"tcp connect: {_failure(exc)}")
    await _close(writer)
    return (True, "tcp connect ok")


def status_expected(status: int, expect: int | list[int] | str) -> bool:
    """`expect` is a status, a list of statuses, or a range/class string: "200-399", "2xx"."""
    if isinstance(expect, int):
        return status == expect
    if isinstance(expect, list):
        return status in expect
    for part in expect.split(","):
        part = part.strip().lower()
        if re.fullmatch(r"\dxx", part) and status // 100 == int(part[0]):
            return True
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit() and int(low) <= status <= int(high):
            return True
        if part.isdigit() and status == int(part):
            return True
    return False


async def http_check(address: Address, check: Check, timeout: float) -> Result:
    host = check.host or (str(address) if not address.is_unix else "localhost")
    request = (
        f"{check.method} {check.path} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: balancer-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        reader, writer = await _open(address, timeout, check.ssl)
    except (OSError, TimeoutError) as exc:
        return (False, f"http connect: {_failure(exc)}")
    try:
        writer.write(request)
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return (False, f"http: not an HTTP response: {status_line[:60]!r}")
        status = int(parts[1])
        body_ok = True
        if check.body:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            body_ok = re.search(check.body.encode(), data.partition(b"\r\n\r\n")[2]) is not None
    except (OSError, TimeoutError) as exc:
        return (False, f"http: {_failure(exc)}")
    finally:
        await _close(writer)
    if not status_expected(status, check.expect):
        return (False, f"http status {status} (expected {check.expect})")
    if not body_ok:
        return (False, f"http status {status}, body does not match {check.body!r}")
    return (True, f"http status {status}")


async def agent_check(address: Address, timeout: float) -> tuple[AgentReply | None, str]:
    try:
        reader, writer = await _open(address, timeout)
    except (OSError, TimeoutError) as exc:
        return (None, f"agent connect: {_failure(exc)}")
    try:
        data = await asyncio.wait_for(reader.read(1024), timeout)
        first_line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
        return (parse_agent_reply(data), f"agent said {first_line!r}")
    except AgentReplyError as exc:
        return (None, str(exc))
    except (OSError, TimeoutError) as exc:
        return (None, f"agent: {_failure(exc)}")
    finally:
        await _close(writer)
