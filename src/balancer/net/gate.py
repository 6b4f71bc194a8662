"""Admission: client connections within frontend and global maxconn, node-wide.

A frontend's listeners pause while the node holds `maxconn` client connections of it, and
every listener pauses while the node holds `global.maxconn`. Paused listeners leave new
connections in the kernel's accept queue (shared by every worker), where they wait instead
of being refused; accepting resumes below the limit. With several workers the limits count
every worker's connections, as HAProxy's threads share one process's maxconn: each worker
publishes its counts (runtime.node_count) and admits a connection only if the node then
stays within the limits.

Theory of operation. A connection is admitted (counted) when it is set up (`admit`, from
connection_made). It cannot be refused then: it is accepted already, two workers may accept
at once when one slot is left, a listener may accept more in the loop pass before it pauses,
a TLS connection is set up only once its handshake is done, and one behind a PROXY header
once the header is read. A connection over a limit is therefore parked (net.parked):
accepted, but neither read nor counted, until there is room; parked connections are admitted
in arrival order (per frontend), before new ones. Room comes from a connection closing in
this worker or, for one another worker closed, from a look at the node's counts every POLL
seconds while this worker has something paused or parked (never otherwise). The limits so
hold for the connections being served, whatever the workers and the kernel do; the few over
a limit wait parked instead of in the accept queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from balancer.runtime.node_count import NodeCount

# Seconds between looks at the node's counts while this worker has listeners paused or
# connections parked, when other workers count too.
POLL: Final = 0.01


class _Door:
    """One frontend's admission: its maxconn (0: none), the connections this worker admitted,
    and this worker's cell of the node's count of them (None: one worker). One record, so a
    connection costs one lookup by name when it is admitted and one when it closes."""

    __slots__ = ("count", "limit", "node")

    def __init__(self) -> None:
        self.limit = 0
        self.count = 0
        self.node: NodeCount | None = None


class Gate:
    def __init__(self, process_max: int) -> None:
        self.process_max = process_max
        self.total = 0  # client connections admitted by this worker
        self._doors: dict[str, _Door] = {}
        self._pausers: dict[str, list[tuple[Callable[[], None], Callable[[], None]]]] = {}
        self._paused: set[str] = set()  # frontends whose listeners are paused
        # Parked connections by frontend, in arrival order: what admits one (False: it is
        # gone, and gives its place back).
        self._parked: dict[str, deque[Callable[[], bool]]] = {}
        self._parked_count = 0
        # With several workers: this worker's cells of the node's counts; None: one worker.
        self._node_total: NodeCount | None = None
        self._node_counts: dict[str, NodeCount] = {}
        self._poll: asyncio.TimerHandle | None = None

    def register(self, frontend: str, maxconn: int, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """A listener of `frontend` (0 = no frontend limit) and how to pause and resume it."""
        self._door(frontend).limit = maxconn  # its node cell: set where the door is made, and by share()
        self._parked.setdefault(frontend, deque())
        self._pausers.setdefault(frontend, []).append((pause, resume))

    def share(self, total: NodeCount, counts: dict[str, NodeCount]) -> None:
        """Count node-wide: `total` is this worker's cell of the process's connections,
        `counts` its cells of each frontend's."""
        self._node_total = total
        self._node_counts = counts
        for name, door in self._doors.items():
            door.node = counts.get(name)

    # -- connections -----------------------------------------------------------------------

    def admit(self, frontend: str) -> bool:
        """Count a new client connection of `frontend` if the limits allow it; False when
        they do not (the caller then parks it: `park`)."""
        door = self._door(frontend)
        if (self._parked_count and self._parked.get(frontend)) or not self._take(door):
            self._pause_full()
            return False
        if self._full(door):
            self._pause_full()
        return True

    def park(self, frontend: str, admit: Callable[[], bool]) -> None:
        """A connection of `frontend` waits for room; `admit` is called once it is counted."""
        self._parked.setdefault(frontend, deque()).append(admit)
        self._parked_count += 1
        self._keep_polling()

    def closed(self, frontend: str) -> None:
        """An admitted connection of `frontend` is gone."""
        self._release(self._door(frontend))
        if self._parked_count:
            self._admit_parked()
        if self._paused:
            self._resume_free()

    def close(self) -> None:
        """Stop polling (the worker stops)."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    # -- inside ----------------------------------------------------------------------------

    def _door(self, frontend: str) -> _Door:
        door = self._doors.get(frontend)
        if door is None:  # a frontend no listener registered: no limit of its own
            door = self._doors[frontend] = _Door()
            door.node = self._node_counts.get(frontend)
        return door

    def _take(self, door: _Door) -> bool:
        total = self.total
        count = door.count
        limit = door.limit
        node = self._node_total
        if node is None:
            if total >= self.process_max or (limit and count >= limit):
                return False
        else:
            if not node.try_take(total, self.process_max):
                return False
            frontend_node = door.node
            if frontend_node is not None:
                if not limit:
                    frontend_node.publish(count + 1)
                elif not frontend_node.try_take(count, limit):
                    node.publish(total)
                    return False
        self.total = total + 1
        door.count = count + 1
        return True

    def _release(self, door: _Door) -> None:
        self.total -= 1
        count = door.count - 1
        door.count = count
        node = self._node_total
        if node is not None:
            node.publish(self.total)
            frontend_node = door.node
            if frontend_node is not None:
                frontend_node.publish(count)

    def _full(self, door: _Door) -> bool:
        """Whether the node holds a limit's worth of connections for `door`'s frontend."""
        node = self._node_total
        total = self.total if node is None else node.total()
        if total >= self.process_max:
            return True
        limit = door.limit
        if not limit:
            return False
        frontend_node = door.node
        count = door.count if frontend_node is None else frontend_node.total()
        return count >= limit

    def _pause_full(self) -> None:
        """Pause the listeners of every frontend that is full or has connections parked."""
        for name in self._pausers:
            if name not in self._paused and (self._parked.get(name) or self._full(self._door(name))):
                self._paused.add(name)
                self._apply(name, pause=True)
        if self._paused:
            self._keep_polling()

    def _resume_free(self) -> None:
        for name in list(self._paused):
            if not self._parked.get(name) and not self._full(self._door(name)):
                self._paused.discard(name)
                self._apply(name, pause=False)

    def _admit_parked(self) -> None:
        """Admit parked connections, in order per frontend, while the limits allow."""
        for frontend, parked in self._parked.items():
            door = self._door(frontend)
            while parked:
                if not self._take(door):
                    break
                admit = parked.popleft()
                self._parked_count -= 1
                if not admit():
                    self._release(door)  # it left while parked: its place goes on

    def _keep_polling(self) -> None:
        """With several workers, look again soon: others' connections may close."""
        if self._node_total is not None and self._poll is None:
            self._poll = asyncio.get_running_loop().call_later(POLL, self._look)

    def _look(self) -> None:
        self._poll = None
        if self._parked_count:
            self._admit_parked()
        if self._paused:
            self._resume_free()
        if self._parked_count or self._paused:
            self._keep_polling()

    def _apply(self, frontend: str, pause: bool) -> None:
        for pause_listener, resume_listener in self._pausers.get(frontend, ()):
            (pause_listener if pause else resume_listener)()
