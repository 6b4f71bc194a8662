"""The stick journal: what workers write reaches the master once, in order; a ring that went
round before it was read is reported lost; a worker in another process writes its own ring."""

from __future__ import annotations

import os

from balancer.runtime.stick_journal import StickChange, StickJournal


def test_changes_of_every_slot_are_read_once_in_order() -> None:
    journal = StickJournal.create(slots=2, capacity=8)
    try:
        journal.write(0, 1, 10, 11, 7)
        journal.write(1, 0, 20, 21, -5)
        journal.write(0, 1, 12, 13, 8)
        changes, lost = journal.read()
        assert not lost
        assert changes == [StickChange(1, 10, 11, 7), StickChange(1, 12, 13, 8), StickChange(0, 20, 21, -5)]
        assert journal.read() == ([], False)
        journal.write(1, 2, -1, -2, 3)
        assert journal.read() == ([StickChange(2, -1, -2, 3)], False)
    finally:
        journal.close()


def test_a_ring_that_went_round_unread_is_reported_lost_with_its_newest_records() -> None:
    journal = StickJournal.create(slots=1, capacity=4)
    try:
        for n in range(10):
            journal.write(0, 0, n, n, n)
        changes, lost = journal.read()
        assert lost
        assert [change.key0 for change in changes] == [6, 7, 8, 9]
        journal.write(0, 0, 10, 10, 10)
        assert journal.read() == ([StickChange(0, 10, 10, 10)], False)
    finally:
        journal.close()


def test_a_worker_process_writes_what_the_master_reads() -> None:
    journal = StickJournal.create(slots=2, capacity=1024)
    try:
        pid = os.fork()
        if pid == 0:  # the worker of slot 1, in its own process, on the inherited descriptor
            worker = StickJournal.attach(os.dup(journal.fd))
            for n in range(1000):
                worker.write(1, 3, n, -n, n * 2)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        changes, lost = journal.read()
        assert not lost and len(changes) == 1000
        assert changes[-1] == StickChange(3, 999, -999, 1998)
    finally:
        journal.close()


def test_a_client_that_keeps_coming_back_is_told_again_a_quarter_of_expire_later() -> None:
    """route.persistence.StickEntries with [peers]: a new client is noted once; its uses
    are not, until a quarter of `expire` after it was last noted (so the other nodes do
    not let it expire while it is used here)."""
    from balancer.config.model import StickTable
    from balancer.route.persistence import StickEntries

    now = [1000.0]
    entries = StickEntries(StickTable.model_validate({"expire": "400s", "size": 100}), clock=lambda: now[0])
    journal = StickJournal.create(slots=1, capacity=64)
    try:
        entries.journal = journal
        entries.know(["s1"])
        assert entries.claim("10.0.0.7", "s1") == "s1"
        assert len(journal.read()[0]) == 1
        for _ in range(9):  # a request every 10 s: 90 s, under a quarter of 400 s
            now[0] += 10
            assert entries.get("10.0.0.7") == "s1"
        assert journal.read() == ([], False)
        now[0] += 20  # 110 s since it was noted
        assert entries.get("10.0.0.7") == "s1"
        changes, lost = journal.read()
        assert len(changes) == 1 and not lost
    finally:
        journal.close()
        entries.table.close()
