"""net.outbox: writes held to the end of the loop pass, sent in order, closes after them."""

from __future__ import annotations

import asyncio

import pytest

from balancer.net.outbox import Outbox


class RecordingTransport:
    """Records what reaches it, in order, in a log shared by all transports of a test."""

    def __init__(self, name: str, log: list[tuple[str, bytes | str]], broken: bool = False) -> None:
        self.name = name
        self.log = log
        self.broken = broken

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("unable to perform operation: the handler is closed")
        self.log.append((self.name, data))

    def close(self) -> None:
        self.log.append((self.name, "close"))


def run(test: object) -> None:
    asyncio.run(test())  # type: ignore[operator]


def test_writes_wait_for_the_end_of_the_pass_and_keep_their_order() -> None:
    async def test() -> None:
        log: list[tuple[str, bytes | str]] = []
        outbox = Outbox()
        a, b = RecordingTransport("a", log), RecordingTransport("b", log)
        outbox.write(a, b"1")  # type: ignore[arg-type]
        outbox.write(b, b"x")  # type: ignore[arg-type]
        outbox.write(a, b"2")  # type: ignore[arg-type]
        outbox.close(a)  # type: ignore[arg-type]
        assert log == []
        await asyncio.sleep(0)
        assert log == [("a", b"1"), ("b", b"x"), ("a", b"2"), ("a", "close")]

    run(test)


def test_a_transport_that_refuses_a_write_costs_the_others_nothing() -> None:
    async def test() -> None:
        log: list[tuple[str, bytes | str]] = []
        outbox = Outbox()
        gone, alive = RecordingTransport("gone", log, broken=True), RecordingTransport("alive", log)
        outbox.write(gone, b"lost")  # type: ignore[arg-type]
        outbox.write(alive, b"kept")  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert log == [("alive", b"kept")]

    run(test)


def test_flush_sends_now_and_the_pass_sends_what_came_later_once() -> None:
    async def test() -> None:
        log: list[tuple[str, bytes | str]] = []
        outbox = Outbox()
        a = RecordingTransport("a", log)
        outbox.write(a, b"early")  # type: ignore[arg-type]
        outbox.flush()
        assert log == [("a", b"early")]
        outbox.write(a, b"late")  # type: ignore[arg-type]
        assert log == [("a", b"early")]
        for _ in range(3):
            await asyncio.sleep(0)
        assert log == [("a", b"early"), ("a", b"late")]

    run(test)


@pytest.mark.parametrize("passes", [1, 5])
def test_every_pass_with_writes_flushes_itself(passes: int) -> None:
    async def test() -> None:
        log: list[tuple[str, bytes | str]] = []
        outbox = Outbox()
        a = RecordingTransport("a", log)
        for n in range(passes):
            outbox.write(a, b"%d" % n)  # type: ignore[arg-type]
            await asyncio.sleep(0)
            assert log[-1] == ("a", b"%d" % n)
        assert len(log) == passes

    run(test)
