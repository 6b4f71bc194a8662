"""The nftables side of an L4 node: the text of its table, slot deltas, and running `nft`.

One table, `table ip balancer_l4`, holds every `[[l4]]` of the file. For the table at index
T of the file (its `ports` on its `vip`):

    map slots_T { typeof jhash ip saddr mod 2 : meta mark; size M; elements = { slot : mark } }
    set flows_T_N { typeof ip saddr . tcp sport . ip daddr . tcp dport; flags dynamic,timeout; }
    chain pre   { hook prerouting; ip daddr VIP tcp dport { PORTS } jump l4_T }
    chain l4_T  { a new SYN jumps to l4_T_new; a 5-tuple in flows_T_N gets node N's mark
                  (refreshing its idle timeout) and returns; else jump l4_T_new }
    chain l4_T_new { delete the 5-tuple from every flows_T_N (a reused 5-tuple is balanced
                  anew); mark = KEY map @slots_T; add the 5-tuple to the chosen node's set }

KEY is `jhash ip saddr . sport . ip daddr . dport mod M seed S` (maglev), `jhash ip saddr mod M
seed S` (source), `numgen inc mod M` (roundrobin) or `numgen random mod M` (random): every
method indexes the same kind of slot map, so a health change is always a delta of slots.

Why one set per node rather than one flow map: the kernel cannot delete a map element from
the packet path (`delete @map` is EINVAL, `delete @set` works) and `update @map` keeps an
element's old data, so a map could not re-balance a reused 5-tuple. The per-node sets cost
one rule per node per packet, which is fine for a tier of a few L7 nodes.

A packet whose slot map lookup fails (no usable node) gets no mark; the blackhole route of
the VIP drops it (balancer.cluster.l4).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import operator
import subprocess
from collections.abc import Sequence
from itertools import compress

from balancer.config.model import L4

TABLE = "balancer_l4"
# Marks and routing table ids: 0x4C34TTNN ("L4", table index, node index + 1). A mark is
# never 0 (0 means "not balanced") and never one of the reserved table ids 253-255.
MARK_BASE = 0x4C340000
MAX_TABLES = 256
MAX_NODES = 255
FLOW_IDLE_TIMEOUT = 300  # seconds an established flow keeps its node without a packet
FLOW_SET_SIZE = 262144


class NftError(Exception):
    """`nft` refused a script or could not be run; the message carries its stderr."""


def node_mark(table_index: int, node_index: int) -> int:
    """The fwmark (and routing table id) of node `node_index` of [[l4]] `table_index`."""
    if not 0 <= table_index < MAX_TABLES or not 0 <= node_index < MAX_NODES:
        raise ValueError(f"at most {MAX_TABLES} [[l4]] tables of {MAX_NODES} nodes each")
    return MARK_BASE | (table_index << 8) | (node_index + 1)


def _flow_key(protocol: str) -> str:
    return f"ip saddr . {protocol} sport . ip daddr . {protocol} dport"


def slot_key(table: L4) -> str:
    """The nft expression that picks a slot of the table's map for a packet."""
    size = table.table_size
    if table.method == "maglev":
        return f"jhash {_flow_key(table.protocol)} mod {size} seed {table.seed or 0:#x}"
    if table.method == "source":
        return f"jhash ip saddr mod {size} seed {table.seed or 0:#x}"
    if table.method == "roundrobin":
        return f"numgen inc mod {size}"
    return f"numgen random mod {size}"


def _elements(slots: Sequence[int], indexes: Sequence[int] | None = None) -> str:
    chosen = range(len(slots)) if indexes is None else indexes
    # map() over a bound format: no Python frame per element (a delta has thousands).
    return ", ".join(map("{} : {:#x}".format, chosen, map(slots.__getitem__, chosen)))


def changed_slots(old: Sequence[int], new: Sequence[int]) -> list[int]:
    """The indexes where two slot lists of the same length differ (C-level loops: a
    65537-slot comparison costs well under a millisecond)."""
    if len(old) != len(new):
        raise ValueError(f"slot lists of different sizes: {len(old)} and {len(new)}")
    return list(compress(range(len(new)), map(operator.ne, old, new)))


def render_table(tables: Sequence[L4], slots: Sequence[Sequence[int]]) -> str:
    """The whole nft script that (re)creates the table: `slots[T]` holds the mark of each
    slot of [[l4]] T (a list of table_size marks, or [] while no node is usable).
    The script first creates then deletes the table, so one `nft -f` replaces it atomically
    whether or not it existed."""
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    pre: list[str] = []
    for t, table in enumerate(tables):
        key = _flow_key(table.protocol)
        lines.append(f"  map slots_{t} {{ typeof jhash ip saddr mod 2 : meta mark; size {table.table_size + 1};")
        if slots[t]:
            lines.append(f"    elements = {{ {_elements(slots[t])} }}")
        lines.append("  }")
        for n in range(len(table.node)):
            lines.append(
                f"  set flows_{t}_{n} {{ typeof {key}; size {FLOW_SET_SIZE};"
                f" flags dynamic,timeout; timeout {FLOW_IDLE_TIMEOUT}s; }}"
            )
        ports = f" {table.protocol} dport {{ {', '.join(map(str, table.ports))} }}" if table.ports else ""
        match = f"ip daddr {table.vip} ip protocol {table.protocol}{ports}"
        pre.append(f"    {match} jump l4_{t}")
        lines.append(f"  chain l4_{t} {{")
        if table.protocol == "tcp":
            lines.append(f"    tcp flags & (syn | ack) == syn jump l4_{t}_new")
        for n in range(len(table.node)):
            mark = node_mark(t, n)
            lines.append(f"    {key} @flows_{t}_{n} meta mark set {mark:#x} update @flows_{t}_{n} {{ {key} }} return")
        lines.append(f"    jump l4_{t}_new")
        lines.append("  }")
        lines.append(f"  chain l4_{t}_new {{")
        for n in range(len(table.node)):
            lines.append(f"    delete @flows_{t}_{n} {{ {key} }}")
        lines.append(f"    meta mark set {slot_key(table)} map @slots_{t}")
        for n in range(len(table.node)):
            lines.append(f"    meta mark {node_mark(t, n):#x} update @flows_{t}_{n} {{ {key} }} return")
        lines.append("  }")
    lines.append("  chain pre { type filter hook prerouting priority mangle; policy accept;")
    lines.extend(pre)
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_slot_delta(
    table_index: int, old: Sequence[int], new: Sequence[int], changed: Sequence[int] | None = None
) -> str:
    """The nft script that turns slot map `old` into `new`, touching only the slots that
    change (a slot's data cannot be overwritten: it is deleted and added in one transaction).
    "" when nothing changes. `[]` stands for an empty map (no usable node). `changed`, when
    given, is `changed_slots(old, new)` already computed by the caller."""
    name = f"ip {TABLE} slots_{table_index}"
    if not new:
        return f"flush map {name}\n" if old else ""
    if not old:
        return f"add element {name} {{ {_elements(new)} }}\n"
    if changed is None:
        changed = changed_slots(old, new)
    if not changed:
        return ""
    listed = ", ".join(map(str, changed))
    return f"delete element {name} {{ {listed} }}\nadd element {name} {{ {_elements(new, changed)} }}\n"


def render_slot_delta_json(
    table_index: int, old: Sequence[int], new: Sequence[int], changed: Sequence[int] | None = None
) -> str:
    """render_slot_delta as an nft JSON document (run it with `run_nft(..., json_input=True)`):
    the same transaction, which libnftables parses about a fifth faster than the text for a
    delta of thousands of slots (one L7 node of ten: ~6,700 slots, 25 ms instead of 32)."""
    where = {"family": "ip", "table": TABLE, "name": f"slots_{table_index}"}
    commands: list[dict[str, object]] = []
    if not new:
        if old:
            commands.append({"flush": {"map": where}})
    elif not old:
        commands.append({"add": {"element": {**where, "elem": [[slot, mark] for slot, mark in enumerate(new)]}}})
    else:
        if changed is None:
            changed = changed_slots(old, new)
        if changed:
            commands.append({"delete": {"element": {**where, "elem": list(changed)}}})
            added = [[slot, new[slot]] for slot in changed]
            commands.append({"add": {"element": {**where, "elem": added}}})
    return json.dumps({"nftables": commands}) if commands else ""


class _LibNftables:
    """libnftables (Debian's libnftables1, what `nft` itself runs) called in-process through
    ctypes: the same parser and transaction as `nft -f`, without starting a process and
    building its cache each time (1,000-slot delta: 5 ms instead of 25 ms). Debian's Python
    binding is this same library, but only for the system Python."""

    def __init__(self) -> None:
        library = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1")
        library.nft_ctx_new.restype = ctypes.c_void_p
        library.nft_ctx_new.argtypes = [ctypes.c_uint32]
        library.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        library.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        library.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        library.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        library.nft_run_cmd_from_buffer.restype = ctypes.c_int
        library.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        library.nft_ctx_output_get_flags.restype = ctypes.c_uint
        library.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        library.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        context = library.nft_ctx_new(0)
        if not context:
            raise OSError("nft_ctx_new failed")
        library.nft_ctx_buffer_output(context)
        library.nft_ctx_buffer_error(context)
        self.library = library
        self.context = context

    def run(self, script: str, json_input: bool = False) -> None:
        # libnftables 1.0.6 parses its input as JSON while the JSON output flag is set (it
        # has no input flag yet): set for this call only.
        flags = self.library.nft_ctx_output_get_flags(self.context)
        if json_input:
            self.library.nft_ctx_output_set_flags(self.context, flags | _OUTPUT_JSON)
        try:
            failed = self.library.nft_run_cmd_from_buffer(self.context, script.encode()) != 0
        finally:
            if json_input:
                self.library.nft_ctx_output_set_flags(self.context, flags)
        if failed:
            error = self.library.nft_ctx_get_error_buffer(self.context) or b""
            raise NftError(f"nft refused the script: {error.decode(errors='replace').strip()}")


_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON


_library: _LibNftables | None = None
_library_missing = False


def run_nft(script: str, nft: str = "nft", json_input: bool = False) -> None:
    """Apply `script` (nft text, or an nft JSON document with `json_input`) in one
    transaction: all of it or nothing. Through libnftables when it loads, else `nft -f -`
    (`nft` names the command). Raises NftError."""
    global _library, _library_missing
    if _library is None and not _library_missing:
        try:
            _library = _LibNftables()
        except (OSError, AttributeError):
            _library_missing = True
    if _library is not None:
        _library.run(script, json_input)
        return
    command = [nft, "-j", "-f", "-"] if json_input else [nft, "-f", "-"]
    try:
        result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"cannot run {nft}: {exc}") from None
    if result.returncode != 0:
        raise NftError(f"nft refused the script: {result.stderr.strip()}")


def delete_table(nft: str = "nft") -> None:
    """Remove the table if it exists (what a stop, or a start after a crash, does first)."""
    run_nft(f"table ip {TABLE}\ndelete table ip {TABLE}\n", nft)
