"""net.gate: frontend and global maxconn, for one worker and for workers sharing a segment.

Two Gate objects over one real shared segment stand for two workers of a node (each with
its own slot); listeners are recorded as paused or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from balancer.config import parse_config
from balancer.net.gate import POLL, Gate
from balancer.runtime.shared import Layout, SharedState

CONFIG = """
[global]
maxconn = {process_max}

[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
default_backend = "web"
maxconn = {www_max}

[[frontend]]
name = "api"
bind = ["127.0.0.1:0"]
default_backend = "web"

[[backend]]
name = "web"
[[backend.server]]
name = "s1"
address = "127.0.0.1:8001"
"""


class Listeners:
    """Whether each frontend's (one) listener is paused, as the gate left it."""

    def __init__(self, gate: Gate, limits: dict[str, int]) -> None:
        self.paused: dict[str, bool] = {}
        for name, limit in limits.items():
            self.paused[name] = False
            gate.register(name, limit, self._setter(name, True), self._setter(name, False))

    def _setter(self, name: str, paused: bool) -> Callable[[], None]:
        def apply() -> None:
            self.paused[name] = paused

        return apply


class Parked:
    """Connections parked by a gate; `gone` ones refuse their admission."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.gone: set[str] = set()

    def park(self, gate: Gate, frontend: str, name: str) -> None:
        def admit() -> bool:
            if name in self.gone:
                return False
            self.admitted.append(name)
            return True

        gate.park(frontend, admit)


def workers(count: int, www_max: int, process_max: int = 100) -> list[tuple[Gate, Listeners]]:
    config = parse_config(CONFIG.format(process_max=process_max, www_max=www_max))
    shared = SharedState.create(Layout(config, count))
    layout = shared.layout
    made = []
    for slot in range(count):
        gate = Gate(process_max)
        listeners = Listeners(gate, {"www": www_max, "api": 0})
        if count > 1:
            gate.share(
                shared.node_count(layout.process_connection_cells(), slot),
                {
                    name: shared.node_count(layout.frontend_connection_cells(i), slot)
                    for i, name in enumerate(layout.frontends)
                },
            )
        made.append((gate, listeners))
    return made


async def settle(condition: Callable[[], bool], polls: int = 20) -> bool:
    """Let the loop run the gates' polls until `condition` holds, at most `polls` of them."""
    for _ in range(polls):
        if condition():
            return True
        await asyncio.sleep(POLL)
    return condition()


def test_one_worker_pauses_at_maxconn_and_parks_a_burst_beyond_it() -> None:
    ((gate, listeners),) = workers(1, www_max=2)
    parked = Parked()
    assert gate.admit("www")
    assert not listeners.paused["www"]
    assert gate.admit("www")
    assert listeners.paused["www"]
    assert not listeners.paused["api"]  # another frontend keeps accepting
    assert not gate.admit("www")  # accepted in the same burst: over the limit
    parked.park(gate, "www", "third")
    gate.closed("www")
    assert parked.admitted == ["third"]
    assert listeners.paused["www"], "the parked connection took the room: still full"
    gate.closed("www")
    assert not listeners.paused["www"]


def test_a_parked_connection_that_left_gives_its_place_to_the_next() -> None:
    ((gate, _),) = workers(1, www_max=1)
    parked = Parked()
    assert gate.admit("www")
    for name in ("a", "b", "c"):
        assert not gate.admit("www")
        parked.park(gate, "www", name)
    parked.gone.add("a")
    gate.closed("www")
    assert parked.admitted == ["b"]
    gate.closed("www")
    assert parked.admitted == ["b", "c"]


def test_global_maxconn_pauses_every_frontend() -> None:
    ((gate, listeners),) = workers(1, www_max=0, process_max=3)
    assert gate.admit("www") and gate.admit("api")
    assert not any(listeners.paused.values())
    assert gate.admit("api")
    assert all(listeners.paused.values())
    gate.closed("www")
    assert not any(listeners.paused.values())


def test_frontend_maxconn_counts_every_worker() -> None:
    async def scenario() -> None:
        (a, a_listeners), (b, b_listeners) = workers(2, www_max=3)
        parked = Parked()
        assert a.admit("www") and a.admit("www")
        assert b.admit("www")  # the third of the node: B is full
        assert b_listeners.paused["www"]
        assert not a_listeners.paused["www"], "A has not looked since"
        assert not a.admit("www"), "a fourth connection, accepted by A: over the node's limit"
        parked.park(a, "www", "fourth")
        assert a_listeners.paused["www"]
        b.closed("www")  # room, in the other worker: A's poll finds it
        assert not b_listeners.paused["www"]
        assert await settle(lambda: parked.admitted == ["fourth"]), parked.admitted
        assert a_listeners.paused["www"], "full again with the parked one"
        a.closed("www")
        assert await settle(lambda: not a_listeners.paused["www"])
        a.close()
        b.close()

    asyncio.run(scenario())


def test_global_maxconn_counts_every_worker_and_resumes_when_others_close() -> None:
    async def scenario() -> None:
        (a, a_listeners), (b, b_listeners) = workers(2, www_max=0, process_max=2)
        assert a.admit("api")
        assert b.admit("www")
        assert all(b_listeners.paused.values())
        parked = Parked()
        assert not a.admit("www")
        parked.park(a, "www", "x")
        assert all(a_listeners.paused.values())
        b.closed("www")
        assert await settle(lambda: parked.admitted == ["x"])
        a.closed("api")
        assert await settle(lambda: not any(a_listeners.paused.values()))
        a.close()
        b.close()

    asyncio.run(scenario())
