"""A daemon the master runs as its child (ExaBGP for [bgp], keepalived for [vrrp]): how it is
tied to the master's life, restarted when it dies, and ended.

- `die_with_parent`, the child's preexec hook: the kernel sends it SIGTERM when the master
  dies (PR_SET_PDEATHSIG), so routes and VIPs never outlive a balancer that is gone;
- `restart_delay`: a child that keeps dying quickly is restarted after a doubling delay
  (RESTART_DELAYS), one that ran STEADY_RUN seconds after the first delay again;
- `output_tail`: the last lines of its output, for the log line that says it died;
- `end_process`: SIGTERM, then SIGKILL if it has not exited within a timeout;
- `runtime_folder`: its private folder (configuration, sockets, FIFOs, output), named
  balancer-TIER-PID-... in the temporary directory; one a killed master left is removed by
  the next start (`remove_stale_folders`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # after the n-th quick death in a row
STEADY_RUN = 30.0  # a child alive this long: its next death restarts after the first delay
LOG_TAIL = 10  # lines of its output logged when it dies

log = logging.getLogger("balancer.cluster")


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the master dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def restart_delay(quick_deaths: int) -> float:
    """The pause before the next start after `quick_deaths` quick deaths in a row (0: the
    child ran long enough, the first delay)."""
    return RESTART_DELAYS[max(0, min(quick_deaths, len(RESTART_DELAYS)) - 1)]


class Backoff:
    """The pauses between starts of a child that may keep dying quickly."""

    def __init__(self) -> None:
        self.quick_deaths = 0

    def failed_start(self) -> float:
        """The pause after a start that failed."""
        self.quick_deaths += 1
        return restart_delay(self.quick_deaths)

    def died(self, ran: float) -> float:
        """The pause after the child died having run `ran` seconds."""
        self.quick_deaths = 0 if ran > STEADY_RUN else self.quick_deaths + 1
        return restart_delay(self.quick_deaths)

    def reset(self) -> None:
        self.quick_deaths = 0


async def pause(wake: asyncio.Event, delay: float) -> None:
    """Wait `delay` seconds or until `wake` is set (a stop, a reload), then clear it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), delay)
    wake.clear()


def output_tail(path: str) -> str:
    """ "; its last output: ..." with the last LOG_TAIL lines of the file, or "" without."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-LOG_TAIL:]
    except OSError:
        return ""
    return "; its last output:\n  " + "\n  ".join(lines) if lines else ""


async def end_process(process: asyncio.subprocess.Process | None, what: str, timeout: float) -> bool:
    """SIGTERM to `process`, SIGKILL after `timeout` seconds if it has not exited; whether
    it had to be killed. Nothing to do for no process or one that has exited."""
    if process is None or process.returncode is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
        return False
    except TimeoutError:
        log.warning("%s did not exit %gs after SIGTERM: killed", what, timeout)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return True


def runtime_folder(tier: str) -> str:
    """A new private folder for `tier`'s child, after removing those of masters that died
    without removing theirs."""
    parent = tempfile.gettempdir()
    for folder in remove_stale_folders(parent, tier):
        log.info("%s: removed %s, left by a master that was killed", tier, folder)
    return tempfile.mkdtemp(prefix=f"balancer-{tier}-{os.getpid()}-", dir=parent)


def remove_stale_folders(parent: str, tier: str) -> list[str]:
    """Remove the runtime folders of `tier` in `parent` left by masters that were killed (a
    folder is named balancer-TIER-PID-...; removed only when it is ours and PID is gone)."""
    prefix = f"balancer-{tier}-"
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        try:
            if not pid_text.isdigit() or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        except OSError:  # alive under another user (EPERM), or gone meanwhile
            continue
    return removed
