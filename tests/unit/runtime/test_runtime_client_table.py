"""The shared client table without sockets: collisions, eviction, expiry, torn entries,
and two processes writing one table at once."""

from __future__ import annotations

import multiprocessing
import os

from balancer.runtime.client_table import ENTRY_WORDS, HEADER_WORDS, VALUE, ClientTable, address_key


def key(n: int) -> tuple[int, int]:
    found = address_key(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert found is not None
    return found


def test_address_keys_are_sixteen_bytes_and_an_ipv4_address_is_its_mapped_form() -> None:
    assert address_key("192.0.2.1") == address_key("::ffff:192.0.2.1")
    assert address_key("2001:db8::1") != address_key("2001:db8::2")
    assert address_key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == (-1, -1), "stored as signed words"
    for nothing in ("", "-", "unix", "10.0.0.256", "nope"):
        assert address_key(nothing) is None


def test_keys_colliding_in_one_bucket_all_fit_then_the_least_recently_used_goes() -> None:
    table = ClientTable.create(size=8, expire=60)  # one bucket of 8 ways: every key collides
    assert (table.buckets, table.ways) == (1, 8)
    for n in range(8):
        table.insert(*key(n), n + 100, now=n)
    assert [table.value(table.find(*key(n), now=10)) for n in range(8)] == [n + 100 for n in range(8)]
    table.find(*key(0), now=20)  # client 0 is used again; client 1 is now the oldest
    table.insert(*key(8), 108, now=21)
    assert table.find(*key(1), now=22) == -1, "least recently used, evicted"
    assert table.value(table.find(*key(0), now=22)) == 100
    assert table.value(table.find(*key(8), now=22)) == 108
    assert len(table.live(now=22)) == 8


def test_an_entry_is_forgotten_expire_after_its_last_use_and_its_place_reused_first() -> None:
    table = ClientTable.create(size=8, expire=1.0)
    for n in range(8):
        table.insert(*key(n), 1, now=0)
    assert table.find(*key(3), now=900) >= 0  # used again at 900 ms
    assert table.find(*key(4), now=1001) == -1, "idle 1001 ms > 1 s"
    assert table.find(*key(3), now=1800) >= 0, "idle 900 ms"
    index = table.insert(*key(9), 2, now=1900)  # takes an expired entry, not client 3's
    assert table.find(*key(3), now=1900) >= 0
    assert table.value(index) == 2
    assert len(table.live(now=1900)) == 2


def test_an_insert_of_a_key_already_there_updates_it_in_place() -> None:
    table = ClientTable.create(size=64, expire=60)
    first = table.insert(*key(1), 5, now=0)
    assert table.insert(*key(1), 6, now=1) == first
    assert table.value(table.find(*key(1), now=2)) == 6
    assert len(table.live(now=2)) == 1


def test_a_torn_entry_reads_as_a_miss_and_heals_at_the_next_write() -> None:
    table = ClientTable.create(size=64, expire=60)
    index = table.insert(*key(7), 41, now=0)
    # Another process wrote a new value but not yet its check word (or two writers mixed).
    table.words[HEADER_WORDS + index * ENTRY_WORDS + VALUE] = 42
    assert table.find(*key(7), now=1) == -1, "a torn entry is never a wrong answer"
    assert table.insert(*key(7), 42, now=2) == index
    assert table.value(table.find(*key(7), now=3)) == 42


def test_cells_of_a_slot_count_for_the_key_they_were_written_for_only() -> None:
    table = ClientTable.create(size=8, expire=60, cell_words=2, slots=2)
    index = table.insert(*key(1), 0, now=0)
    table.words[table.own_cells(0, index) + 1] += 3
    table.words[table.own_cells(1, index) + 1] += 4
    assert table.cell_sum(index, 1) == 7
    for n in range(2, 10):  # the entry passes to another key
        table.insert(*key(n), 0, now=n)
    assert table.find(*key(9), now=10) == index, "client 1 was the least recently used"
    assert table.cell_sum(index, 1) == 0, "the old key's counts are not the new key's"
    table.words[table.own_cells(1, index) + 1] += 1
    assert table.cell_sum(index, 1) == 1
    table.clear_slot(1)  # slot 1's worker died
    assert table.cell_sum(index, 1) == 0


def test_the_busy_are_evicted_last() -> None:
    table = ClientTable.create(size=8, expire=60, cell_words=2, slots=1)
    for n in range(8):
        index = table.insert(*key(n), 0, now=n)
        if n == 0:
            table.words[table.own_cells(0, index) + 1] = 1  # client 0 has an open connection
    table.insert(*key(8), 0, now=20, busy_cell=1)
    assert table.find(*key(0), now=21) >= 0, "busy: kept although the oldest"
    assert table.find(*key(1), now=21) == -1


def _writer(fd: int, slot: int, clients: int, rounds: int) -> None:
    table = ClientTable.attach(fd)
    words = table.words
    for _ in range(rounds):
        for n in range(clients):
            index = table.find(*key(n), now=1)
            if index < 0:
                index = table.insert(*key(n), 0, now=1)
            words[table.own_cells(slot, index) + 1] += 1
    os._exit(0)


def test_two_processes_writing_one_table_lose_no_count_and_agree_on_every_entry() -> None:
    table = ClientTable.create(size=4096, expire=3600, cell_words=2, slots=2)
    context = multiprocessing.get_context("fork")
    clients, rounds = 500, 40
    processes = [context.Process(target=_writer, args=(table.fd, slot, clients, rounds)) for slot in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    live = table.live(now=2)
    assert len(live) == clients, "each new client got exactly one entry"
    counts = [table.cell_sum(table.find(*key(n), now=2), 1) for n in range(clients)]
    assert counts == [2 * rounds] * clients, "no increment lost"


def test_a_worker_attaches_the_masters_table() -> None:
    table = ClientTable.create(size=100, expire=30)
    table.insert(*key(1), 9, now=0)
    other = ClientTable.attach(os.dup(table.fd))
    assert (other.buckets, other.ways, other.expire_ms, other.salt) == (table.buckets, table.ways, 30000, table.salt)
    assert other.value(other.find(*key(1), now=1)) == 9
    other.close()
    table.close()
