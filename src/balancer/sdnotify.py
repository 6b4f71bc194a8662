"""systemd's readiness protocol (sd_notify): one datagram to $NOTIFY_SOCKET.

Used with `Type=notify` units (contrib/balancer.service): READY=1 once the workers serve,
RELOADING=1 / READY=1 around a reload, STOPPING=1 on a stop. Without $NOTIFY_SOCKET
(not under systemd) it does nothing.
"""

from __future__ import annotations

import os
import socket
import time


def notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    if state.startswith("RELOADING=1"):
        # systemd >= 253 wants the reload's start time to tell reloads apart.
        state += f"\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        pass
