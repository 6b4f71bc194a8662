"""Which client tables a generation gets from the master, and which a reload keeps."""

from __future__ import annotations

from balancer.config import parse_config
from balancer.runtime.client_tables import TableKeeper


def config(stick: str = 'stick = { expire = "30m", size = 1000 }', limits: str = "", servers: str = "s1 s2"):
    text = (
        f'[[frontend]]\nname = "www"\nbind = "127.0.0.1:8080"\ndefault_backend = "web"\n{limits}\n'
        f'[[backend]]\nname = "web"\n{stick}\n'
    )
    for name in servers.split():
        text += f'[[backend.server]]\nname = "{name}"\naddress = "127.0.0.1:9000"\n'
    return parse_config(text, "balancer.toml")


def test_a_reload_keeps_a_stick_table_while_the_backend_keeps_its_stick_settings() -> None:
    keeper = TableKeeper()
    first = keeper.adopt(config(), 2)
    assert set(first) == {"stick:web"}
    table = first["stick:web"]
    table.insert(1, 2, 3, now=0)
    second = keeper.adopt(config(servers="s2 s1 s3"), 2)  # servers reordered and added
    assert second["stick:web"] is table
    keeper.release(first)  # the old generation is gone: the table stays, the new one uses it
    assert table.find(1, 2, now=1) >= 0
    third = keeper.adopt(config('stick = { expire = "30m", size = 2000 }'), 2)
    assert third["stick:web"] is not table, "new settings: a new, empty table"
    keeper.release(second)
    assert table.memory.closed, "nobody uses the old table any more"
    fourth = keeper.adopt(config(stick=""), 2)
    assert fourth == {}
    keeper.release(third)
    assert third == {}


def test_every_generation_gets_new_limit_tables_with_a_cell_block_per_worker() -> None:
    keeper = TableKeeper()
    limits = 'rate_limit = { requests = 10 }\nconn_limit = { per_src = 5, rate = 2, per = "10s" }'
    first = keeper.adopt(config(limits=limits), 3)
    second = keeper.adopt(config(limits=limits), 3)
    assert first["limit:www"] is not second["limit:www"]
    assert first["limit:www"].slots == 3 and first["limit:www"].cell_words == 8
    assert first["limit:www"].expire_ms == 20_000, "two of the longest window"
    assert first["stick:web"] is second["stick:web"]
    limit_table = first["limit:www"]
    keeper.release(first)
    assert limit_table.memory.closed and not second["stick:web"].memory.closed
