"""Files `balancer check` and `balancer run` must refuse with FILE:LINE and exit 1, never a
traceback (issue 13): text that is not UTF-8, a byte-order mark, durations of zero where a
pause is needed, a check body that is not a regular expression, and a file that serves
nothing. A reload of such a file (SIGHUP, `balancer ctl reload`, POST /api/reload) is refused
with its reason, in one event-log line, and the old configuration keeps serving."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from tests.support import free_port, run_balancer, wait_until
from tests.support.config import server_blocks
from tests.support.curl import curl

pytestmark = pytest.mark.e2e

GOOD = """\
[[frontend]]
name = "www"
bind = ["127.0.0.1:{port}"]
default_backend = "web"

[[backend]]
name = "web"
{check}
  [[backend.server]]
  name = "s1"
  address = "127.0.0.1:9"
"""

# "café" in Latin-1: the é is the single byte 0xe9, on line 3 at column 16 of `# owner: café`.
LATIN1 = b'[global]\nlog = "stdout"\n# owner: caf\xe9\n' + GOOD.format(port=18080, check="").encode()


def check(tmp_path, name: str, content: bytes | str) -> tuple[int, str]:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_balancer("check", "-c", name, cwd=tmp_path)
    return result.returncode, result.stdout + result.stderr


def assert_refused(code: int, output: str, file: str, line: int, message: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "configuration is valid" not in output, output
    assert f"{file}:{line}: {message}" in output, output


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_file_that_is_not_utf8_is_refused_with_the_line_and_the_byte(tmp_path, command):
    (tmp_path / "latin1.toml").write_bytes(LATIN1)

    result = run_balancer(command, "-c", "latin1.toml", cwd=tmp_path, timeout=20)

    output = result.stdout + result.stderr
    assert_refused(result.returncode, output, "latin1.toml", 3, "not UTF-8 text (byte 0xe9 at column 13)")


def test_a_byte_order_mark_is_refused_with_a_hint(tmp_path):
    code, output = check(tmp_path, "bom.toml", b"\xef\xbb\xbf" + GOOD.format(port=18080, check="").encode())

    assert_refused(
        code,
        output,
        "bom.toml",
        1,
        "the file starts with a UTF-8 byte-order mark (BOM); save it without one",
    )


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('check = { interval = "0ms" }', "check.interval"),
        ('check = { interval = "2s", fastinterval = "0s" }', "check.fastinterval"),
        ('check = { downinterval = "0s" }', "check.downinterval"),
        ('check = { timeout = "0s" }', "check.timeout"),
        ('agent = { port = 5555, interval = "0s" }', "agent.interval"),
        ('observe = { cooldown = "0s" }', "observe.cooldown"),
        ('stick = { expire = "0s" }', "stick.expire"),
    ],
)
def test_a_zero_interval_is_refused(tmp_path, setting, key):
    code, output = check(tmp_path, "zero.toml", GOOD.format(port=18080, check=setting))

    assert_refused(code, output, "zero.toml", 8, f"{key}: must be greater than 0")


def test_a_zero_stats_refresh_is_refused(tmp_path):
    text = GOOD.format(port=18080, check="") + '\n[stats]\nbind = "127.0.0.1:18081"\nrefresh = "0s"\n'

    code, output = check(tmp_path, "refresh.toml", text)

    assert_refused(code, output, "refresh.toml", 15, "stats.refresh: must be greater than 0")


def test_a_zero_timeout_that_means_no_limit_stays_valid(tmp_path):
    text = GOOD.format(port=18080, check='timeouts = { server = "0s", connect = "0s", queue = "0s" }')

    code, output = check(tmp_path, "nolimit.toml", text)

    assert code == 0, output


def test_an_invalid_check_body_regex_is_refused(tmp_path):
    code, output = check(
        tmp_path, "body.toml", GOOD.format(port=18080, check='check = { type = "http", body = "ok(" }')
    )

    assert_refused(code, output, "body.toml", 8, "check.body: invalid regular expression 'ok('")


@pytest.mark.parametrize(
    "content",
    [b"", b"# nothing yet\n", b'[global]\nlog = "stdout"\n', b'[[backend]]\nname = "web"\n'],
    ids=["empty", "comment", "global-only", "backend-only"],
)
def test_a_file_that_serves_nothing_is_refused(tmp_path, content):
    code, output = check(tmp_path, "nothing.toml", content)

    assert_refused(code, output, "nothing.toml", 1, "nothing to serve: the file has no [[frontend]]")


def test_run_refuses_a_file_that_serves_nothing(tmp_path):
    (tmp_path / "empty.toml").write_bytes(b"")

    result = run_balancer("run", "-c", "empty.toml", cwd=tmp_path, timeout=20)

    output = result.stdout + result.stderr
    assert_refused(result.returncode, output, "empty.toml", 1, "nothing to serve: the file has no [[frontend]]")


L4_ONLY = """\
[[l4]]
name = "www"
vip = "10.100.0.1"
seed = 24301
  [[l4.node]]
  name = "l7a"
  address = "10.0.3.21"
"""


def test_a_file_with_only_tier_tables_passes_check_and_run_refuses_it_without_root(tmp_path):
    code, output = check(tmp_path, "l4.toml", L4_ONLY)
    assert (code, output.strip()) == (0, "configuration is valid")

    code, output = check(tmp_path, "bad.toml", L4_ONLY.replace("seed = 24301", "table_size = 65536"))
    assert code == 1
    assert output.splitlines() == [
        "bad.toml:1: [[l4]] 'www': method \"maglev\" needs a seed, the same on every L4 node of the tier"
        " (without one the kernel picks a random seed and the nodes disagree)",
        "bad.toml:4: table_size 65536 is not a prime",
    ]

    # Not as root: as root it would program this machine's kernel (the netns tests do that).
    result = run_unprivileged(tmp_path, "run", "-c", "l4.toml")
    output = result.stdout + result.stderr
    message = (
        "l4.toml: [[l4]] and [dsr] program the kernel (nftables, routes, addresses, tunnels): run balancer as root"
    )
    assert (result.returncode, output.strip()) == (1, message)

    (tmp_path / "dsr.toml").write_text('[dsr]\nvips = ["10.100.0.1"]\n')
    result = run_unprivileged(tmp_path, "run", "-c", "dsr.toml")
    assert (result.returncode, (result.stdout + result.stderr).strip()) == (1, message.replace("l4.toml", "dsr.toml"))


def run_unprivileged(cwd, *args: str) -> subprocess.CompletedProcess[str]:
    """`balancer ARGS` as a user that is not root: as root, inside a new user namespace
    (uid 65534 there, no capability over this machine's network)."""
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    if prefix and shutil.which("unshare") is None:
        pytest.skip("running as root and no unshare to drop root with")
    command = [*prefix, sys.executable, "-m", "balancer", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=20, cwd=cwd, check=False)


BGP = """\
[bgp]
router_id = "10.0.3.11"
local_as = 65001
local_address = "10.0.3.11"
hold_time = "6s"
  [[bgp.neighbor]]
  address = "10.0.3.1"
  peer_as = 65000
"""


def test_balancer_check_takes_an_l4_node_with_bgp_and_refuses_a_bad_bgp_table_with_lines(tmp_path):
    code, output = check(tmp_path, "l4.toml", L4_ONLY + BGP)
    assert (code, output.strip()) == (0, "configuration is valid")

    bad = L4_ONLY + BGP.replace('hold_time = "6s"', 'hold_time = "2s"').replace("peer_as = 65000", "peer_as = 0")
    code, output = check(tmp_path, "bad.toml", bad)
    assert code == 1
    assert output.splitlines() == [
        "bad.toml:12: bgp.hold_time: hold_time 2s: use 0 (no keepalives) or 3s to 65535s (RFC 4271)",
        "bad.toml:15: peer_as must be at least 1, got 0",
    ]


# -- reloads of a file that is not UTF-8 ---------------------------------------------------------


def _reload_config(site, servers, admin_port: int) -> str:
    return (
        site.global_toml()
        + f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n'
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "web"\n'
        + '\n[[backend]]\nname = "web"\n'
        + server_blocks(servers)
    )


def _assert_old_config_serves(site, proc) -> None:
    for _ in range(3):
        result = curl(site.url("/"))
        assert (result.status, result.headers.get("server-name")) == (200, "s1")
    assert proc.alive()


def test_a_reload_of_a_file_that_is_not_utf8_is_refused_and_serving_goes_on(site, tagged):
    (s1,) = tagged("s1")
    admin_port = free_port()
    proc = site.start(_reload_config(site, [s1], admin_port), ports=[site.port, admin_port])
    site.config_path.write_bytes(LATIN1)
    reason = f"{site.config_path}:3: not UTF-8 text (byte 0xe9 at column 13)"

    # SIGHUP: one event-log line with the reason, no traceback.
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: f"reload refused: {reason}" in proc.output(), timeout=10, what="the refusal logged")
    _assert_old_config_serves(site, proc)

    # balancer ctl reload: the reason on stderr, exit 1.
    result = run_balancer("ctl", "--url", f"http://127.0.0.1:{admin_port}", "reload")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"reload refused:\s+{re.escape(reason)}", result.stderr), result.stderr

    # POST /api/reload: 400 with the reason in the JSON.
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}/api/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["problems"] == [reason]

    _assert_old_config_serves(site, proc)
    output = proc.output()
    assert "Traceback" not in output and "UnicodeDecodeError" not in output, output
    assert output.count(f"reload refused: {reason}") == 3, output


def test_an_unknown_log_facility_is_refused(tmp_path):
    text = '[global]\nlog = "syslog:udp://127.0.0.1:514"\nlog_facility = "local8"\n' + GOOD.format(port=18080, check="")

    code, output = check(tmp_path, "facility.toml", text)

    assert_refused(code, output, "facility.toml", 3, "global.log_facility must be one of 'kern', 'user'")
    assert "'local7', got 'local8'" in output
