"""The command line as an operator uses it: `balancer check`, `balancer run` and signals."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from tests.support import BalancerProcess, run_balancer, wait_until
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e


def test_check_accepts_a_valid_file(tmp_path):
    config = tmp_path / "good.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [global]
            log = "stdout"

            [[frontend]]
            name = "www"
            bind = ["127.0.0.1:18080"]
            default_backend = "web"

              [[frontend.rule]]
              if = { path_beg = ["/blog"] }
              use_backend = "blog"

            [[backend]]
            name = "web"
              [[backend.server]]
              name = "s1"
              address = "127.0.0.1:9001"

            [[backend]]
            name = "blog"
              [[backend.server]]
              name = "b1"
              address = "127.0.0.1:9002"
            """
        )
    )

    result = run_balancer("check", "-c", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration is valid" in result.stdout + result.stderr


BAD = """\
[global]
log = "stdout"

[[frontend]]
name = "www"
bind = ["127.0.0.1:18080"]
default_backend = "missing"
colour = "blue"

[[backend]]
name = "web"
  [[backend.server]]
  name = "s1"
  address = "not an address"
"""


def test_check_reports_every_problem_with_file_and_line(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD)

    result = run_balancer("check", "-c", "bad.toml", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configuration is valid" not in output
    lines = {int(m[1]) for m in re.finditer(r"bad\.toml:(\d+): \S", output)}
    assert 8 in lines, f"unknown key 'colour' (line 8) not reported:\n{output}"
    assert 14 in lines, f"bad address (line 14) not reported:\n{output}"
    assert 7 in lines, f"undefined backend 'missing' (line 7) not reported:\n{output}"
    assert "colour" in output
    assert "missing" in output


def test_check_reports_a_toml_syntax_error_with_its_line(tmp_path):
    (tmp_path / "broken.toml").write_text('[global]\nlog = "stdout"\n\n[[frontend]\nname = "www"\n')

    result = run_balancer("check", "-c", "broken.toml", cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert re.search(r"broken\.toml:4: \S", output), output


def test_run_refuses_an_invalid_file(tmp_path):
    (tmp_path / "bad.toml").write_text(BAD)

    result = run_balancer("run", "-c", "bad.toml", cwd=tmp_path, timeout=20)

    assert result.returncode != 0
    assert re.search(r"bad\.toml:\d+: ", result.stdout + result.stderr)


def web_config(site, servers) -> str:
    return (
        site.global_toml()
        + f"""
[[frontend]]
name = "www"
bind = ["127.0.0.1:{site.port}"]
default_backend = "web"

[[backend]]
name = "web"
"""
        + server_blocks(servers)
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_balancer_with_exit_code_0(site, tagged, sig):
    servers = tagged("s1")
    proc = site.start(web_config(site, servers))
    assert curl(site.url("/")).status == 200

    assert proc.stop(sig=sig, timeout=10) == 0, proc.output()


def test_sigterm_lets_an_in_flight_request_finish(site, tagged):
    (s1,) = tagged("s1")
    proc = site.start(web_config(site, [s1]))
    curl_exe = require_tool("curl")
    client = subprocess.Popen(
        [
            curl_exe,
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-w",
            " %{http_code}",
            site.url("/slow/1500"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: "/slow/1500" in s1.paths, timeout=5, what="the request to reach the server")
        proc.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()

    assert out.decode() == "s1\n 200", err.decode()
    assert proc.wait(timeout=10) == 0, proc.output()


def test_sighup_reloads_the_file_without_dropping_the_listener(site, tagged):
    s1, s2 = tagged("s1", "s2")
    proc = site.start(web_config(site, [s1]))
    assert curl(site.url("/")).headers["server-name"] == "s1"

    site.config_path.write_text(web_config(site, [s2]))
    proc.send_signal(signal.SIGHUP)

    wait_until(
        lambda: curl(site.url("/")).headers.get("server-name") == "s2", timeout=10, what="the new config to serve"
    )
    assert proc.alive()


def test_sighup_with_an_invalid_file_keeps_the_old_config(site, tagged):
    (s1,) = tagged("s1")
    proc = site.start(web_config(site, [s1]))
    site.config_path.write_text(BAD)
    proc.send_signal(signal.SIGHUP)

    # the refusal is logged with the file's problems, as `balancer check` would print them
    wait_until(lambda: re.search(r"balancer\.toml:\d+: ", proc.output()), timeout=10, what="the refusal logged")
    for _ in range(3):
        result = curl(site.url("/"))
        assert (result.status, result.headers.get("server-name")) == (200, "s1")
    assert proc.alive()


def test_every_sighup_during_a_reload_is_logged_and_the_last_file_wins(site, tagged):
    s1, s2, s3 = tagged("s1", "s2", "s3")
    proc = site.start(web_config(site, [s1]))
    wait_until(lambda: "balancer running" in proc.output(), timeout=10, what="the first workers")

    site.config_path.write_text(web_config(site, [s2]))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP: reloading" in proc.output(), timeout=5, what="the first SIGHUP logged")
    # Edited again while that reload starts its workers: two more SIGHUPs, each answered by a line.
    site.config_path.write_text(web_config(site, [s3]))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "another reload of" in proc.output(), timeout=5, what="the second SIGHUP logged")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "merged with the reload already queued" in proc.output(), timeout=5, what="the third")
    output = proc.output()
    first_done = output.find("reload complete: generation 2")
    assert first_done < 0 or first_done > output.find("merged with the reload already queued"), (
        "the first reload ended before the other SIGHUPs: this run tested nothing\n" + output
    )

    # The queued reload runs once the first is done and serves the file as last written.
    wait_until(lambda: "reload complete: generation 3" in proc.output(), timeout=20, what="the queued reload")
    wait_until(lambda: curl(site.url("/")).headers.get("server-name") == "s3", timeout=5, what="s3 to serve")
    output = proc.output()
    assert output.count("SIGHUP") == 3 + output.count("for the SIGHUP received during the last reload"), output
    assert "reload complete: generation 4" not in output, output
    assert "Traceback" not in output, output


def _handles_sighup(pid: int) -> bool:
    """Whether `pid` catches SIGHUP yet (/proc/PID/status SigCgt): before, SIGHUP would kill it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split(":", 1)[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (signal.SIGHUP - 1)))


def test_a_sighup_while_the_first_workers_start_is_logged_and_done_once_they_serve(site, tagged):
    (s1,) = tagged("s1")
    site.config_path.write_text(web_config(site, [s1]).replace("[global]\n", "[global]\nworkers = 2\n", 1))
    proc = BalancerProcess(site.config_path, log_dir=site.dir)
    site.process = proc  # stopped with the site
    wait_until(lambda: _handles_sighup(proc.pid), timeout=10, what="the master to catch SIGHUP")

    proc.send_signal(signal.SIGHUP)

    wait_until(lambda: "SIGHUP" in proc.output(), timeout=5, what="the SIGHUP logged")
    output = proc.output()
    if "SIGHUP while the first workers start" not in output:
        assert output.find("balancer running") < output.find("SIGHUP: reloading"), output
        pytest.skip("the first workers were serving before the SIGHUP arrived: nothing to test on this run")
    wait_until(lambda: "reload complete: generation 2" in proc.output(), timeout=20, what="the remembered reload")
    output = proc.output()
    assert output.find("balancer running") < output.find("reload complete: generation 2"), output
    assert "reloading for the SIGHUP received while the first workers started" in output, output
    assert curl(site.url("/")).status == 200
