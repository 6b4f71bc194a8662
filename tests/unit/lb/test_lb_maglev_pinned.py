"""Maglev tables are a contract between nodes: cluster/l4 and cluster/nft program the kernel
tier from `build_table`, and every node must compute the same table from the same file,
across versions of this code too. These checksums were computed by the builder as it was
before its speed-up (s22): a faster builder must reproduce them exactly."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator

import pytest

from balancer.lb.maglev import build_table, forget_tables, stable_table

M = 65537


def _names(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


CASES: dict[str, tuple[list[bytes], list[int], int]] = {
    "equal-3": (_names("s", 3), [1] * 3, M),
    "equal-100": (_names("s", 100), [100] * 100, M),
    "equal-1000": (_names("s", 1000), [100] * 1000, M),
    "mixed-10": (_names("s", 10), [100, 50, 200, 100, 150, 256, 100, 30, 100, 80], M),
    "mixed-37-small": (_names("web-", 37), [1 + (i * 7) % 13 for i in range(37)], 251),
    "mixed-500": (_names("n", 500), [1 + (i * 31) % 256 for i in range(500)], M),
}

PAPER = {
    "equal-3": "2c352f932dbf6a17",
    "equal-100": "3170dbaa03fb1f3b",
    "equal-1000": "9fce57d6846b3db2",
    "mixed-10": "e1963dd8b9c411ce",
    "mixed-37-small": "9d327cce3b1608a0",
    "mixed-500": "708bef448f9f5e18",
}

ONE_DOWN = {
    "equal-100": "cf3102b0898d2b59",
    "equal-1000": "3b89c9e2a648c88b",
    "mixed-10": "3ecedd814b5511ee",
}


def _digest(table: list[int]) -> str:
    return hashlib.sha256(array("i", table).tobytes()).hexdigest()[:16]


@pytest.fixture(autouse=True)
def _fresh_tables() -> Iterator[None]:
    forget_tables()
    yield
    forget_tables()


@pytest.mark.parametrize("case", sorted(PAPER))
def test_paper_table_is_unchanged(case: str) -> None:
    identities, weights, size = CASES[case]
    assert _digest(build_table(identities, weights, size)) == PAPER[case]


@pytest.mark.parametrize("case", sorted(ONE_DOWN))
def test_stable_table_with_one_server_down_is_unchanged(case: str) -> None:
    identities, weights, size = CASES[case]
    stable_table("pinned", identities, weights, size)
    k = len(identities) // 2
    table = stable_table("pinned", identities[:k] + identities[k + 1 :], weights[:k] + weights[k + 1 :], size)
    assert _digest(table) == ONE_DOWN[case]
