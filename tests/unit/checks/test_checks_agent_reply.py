"""The agent-check protocol: what an agent's reply line says, what `balancer agent` answers,
and how what the agent said combines with the operator's state into what workers act on.

Every word of HAProxy's protocol as the issue lists it: `up`/`ready`, `drain`, `maint`,
`down`/`fail`/`stopped`, a weight `NN%`, in any order, separated by spaces, commas or tabs,
with an optional `#` comment; unknown words are ignored and a reply that says nothing is refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import balancer.agent as agent_mod
from balancer.proto.agent import AgentReply, AgentReplyError, parse_agent_reply
from balancer.runtime.master_state import ServerStatus

# -- single words ------------------------------------------------------------------------------


def test_up_says_health_up() -> None:
    assert parse_agent_reply(b"up\n") == AgentReply(health="up")


def test_ready_says_admin_ready() -> None:
    assert parse_agent_reply(b"ready\n") == AgentReply(admin_state="ready")


def test_drain() -> None:
    assert parse_agent_reply(b"drain\n") == AgentReply(admin_state="drain")


def test_maint() -> None:
    assert parse_agent_reply(b"maint\n") == AgentReply(admin_state="maint")


@pytest.mark.parametrize("word", [b"down", b"fail", b"stopped"])
def test_down_fail_stopped_say_health_down(word: bytes) -> None:
    assert parse_agent_reply(word + b"\n") == AgentReply(health="down")


@pytest.mark.parametrize(("word", "percent"), [(b"0%", 0), (b"1%", 1), (b"50%", 50), (b"75%", 75), (b"100%", 100)])
def test_a_percentage_alone_is_a_weight(word: bytes, percent: int) -> None:
    assert parse_agent_reply(word + b"\n") == AgentReply(weight_percent=percent)


def test_a_percentage_above_100_is_capped() -> None:
    assert parse_agent_reply(b"150%\n").weight_percent == 100


def test_words_are_case_insensitive() -> None:
    assert parse_agent_reply(b"DRAIN 40%\n") == AgentReply(admin_state="drain", weight_percent=40)
    assert parse_agent_reply(b"Up\n") == AgentReply(health="up")


# -- combinations, order, separators -----------------------------------------------------------


@pytest.mark.parametrize("line", [b"up 50%", b"50% up", b"up,50%", b"50%,up", b"up\t50%", b"  up ,\t 50%  "])
def test_any_order_and_any_separator(line: bytes) -> None:
    assert parse_agent_reply(line + b"\n") == AgentReply(health="up", weight_percent=50)


@pytest.mark.parametrize("line", [b"ready drain 20%", b"20% drain ready", b"ready,20%,drain"])
def test_state_health_and_weight_together(line: bytes) -> None:
    reply = parse_agent_reply(line)
    assert reply.weight_percent == 20
    assert reply.admin_state in ("ready", "drain")  # both named: one wins, the weight survives


def test_health_and_admin_state_are_reported_apart() -> None:
    assert parse_agent_reply(b"up maint\n") == AgentReply(admin_state="maint", health="up")
    assert parse_agent_reply(b"drain down 10%\n") == AgentReply(admin_state="drain", health="down", weight_percent=10)


def test_crlf_line_ending() -> None:
    assert parse_agent_reply(b"up 80%\r\n") == AgentReply(health="up", weight_percent=80)


def test_no_line_ending() -> None:
    assert parse_agent_reply(b"maint") == AgentReply(admin_state="maint")


def test_only_the_first_line_counts() -> None:
    assert parse_agent_reply(b"drain\nmaint 10%\n") == AgentReply(admin_state="drain")


# -- comments ----------------------------------------------------------------------------------


def test_a_comment_after_hash_is_kept_and_not_parsed() -> None:
    reply = parse_agent_reply(b"up 30% # load 2.5 on 4 cores, not drain\n")
    assert reply == AgentReply(health="up", weight_percent=30, comment="load 2.5 on 4 cores, not drain")


def test_a_comment_without_space_before_hash() -> None:
    assert parse_agent_reply(b"drain#maintenance window\n") == AgentReply(
        admin_state="drain", comment="maintenance window"
    )


def test_a_reply_that_is_only_a_comment_is_refused() -> None:
    with pytest.raises(AgentReplyError):
        parse_agent_reply(b"# nothing to say\n")


# -- unknown words, empty replies --------------------------------------------------------------


def test_unknown_words_are_ignored() -> None:
    reply = parse_agent_reply(b"maxconn:30 up foo 60% bar=1\n")
    assert reply == AgentReply(health="up", weight_percent=60)


@pytest.mark.parametrize("line", [b"1000%", b"-5%", b"%", b"50 %x", b"5o%"])
def test_malformed_percentages_are_unknown_words(line: bytes) -> None:
    with pytest.raises(AgentReplyError):
        parse_agent_reply(line + b"\n")


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n", b"   \n", b" , \t,\n", b"\nup 50%\n"])
def test_an_empty_reply_is_refused(data: bytes) -> None:
    with pytest.raises(AgentReplyError):
        parse_agent_reply(data)


def test_a_reply_of_only_unknown_words_is_refused() -> None:
    with pytest.raises(AgentReplyError, match="nothing usable"):
        parse_agent_reply(b"hello world\n")


def test_non_ascii_bytes_do_not_raise_anything_else() -> None:
    assert parse_agent_reply(b"up \xff\xfe 50%\n") == AgentReply(health="up", weight_percent=50)
    with pytest.raises(AgentReplyError):
        parse_agent_reply(b"\xff\xfe\n")


# -- `balancer agent`: what it answers ---------------------------------------------------------


@pytest.fixture
def fixed_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mod, "load_percent", lambda: 42)


def test_agent_without_a_state_file_says_up_and_its_load(fixed_load: None) -> None:
    assert agent_mod.reply(None) == b"up 42%\n"


def test_agent_with_a_missing_state_file_says_up(fixed_load: None, tmp_path: Path) -> None:
    assert agent_mod.reply(str(tmp_path / "absent")) == b"up 42%\n"


@pytest.mark.parametrize(
    ("content", "answer"),
    [
        ("drain\n", b"drain 42%\n"),
        ("maint", b"maint 42%\n"),
        ("down\n", b"down 42%\n"),
        ("up\n", b"up 42%\n"),
        ("up 50%\n", b"up 50%\n"),
        ("DRAIN 10%", b"drain 10%\n"),
        ("drain # until 18:00\n", b"drain 42%\n"),
        ("whatever\n", b"up 42%\n"),
        ("", b"up 42%\n"),
    ],
)
def test_agent_answers_from_its_state_file(fixed_load: None, tmp_path: Path, content: str, answer: bytes) -> None:
    state = tmp_path / "state"
    state.write_text(content)
    assert agent_mod.reply(str(state)) == answer


@pytest.mark.parametrize("content", ["drain", "up 50%", "maint", "down", "ready 5%"])
def test_what_the_agent_answers_parses(fixed_load: None, tmp_path: Path, content: str) -> None:
    state = tmp_path / "state"
    state.write_text(content)
    parse_agent_reply(agent_mod.reply(str(state)))  # does not raise


@pytest.mark.parametrize(
    ("load", "cores", "percent"),
    [(0.0, 4, 100), (2.0, 4, 50), (3.0, 4, 25), (4.0, 4, 1), (16.0, 4, 1), (0.5, 1, 50)],
)
def test_load_percent_falls_with_load_per_core(
    monkeypatch: pytest.MonkeyPatch, load: float, cores: int, percent: int
) -> None:
    monkeypatch.setattr(agent_mod.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(agent_mod.os, "cpu_count", lambda: cores)
    assert agent_mod.load_percent() == percent


def test_load_percent_without_a_load_average_is_100(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(agent_mod.os, "getloadavg", unavailable)
    assert agent_mod.load_percent() == 100


# -- operator and agent combined (ServerStatus.effective) --------------------------------------


def status(**changes: object) -> ServerStatus:
    base = {"admin_state": "ready", "health": "up", "weight": 100}
    base.update(changes)
    return ServerStatus(**base)  # type: ignore[arg-type]


def test_no_agent_keeps_the_operator_state_and_weight() -> None:
    record = status().effective()
    assert (record.admin_state, record.health, record.weight) == ("ready", "up", 100)


@pytest.mark.parametrize(
    ("operator", "agent", "effective"),
    [
        ("ready", "ready", "ready"),
        ("ready", "drain", "drain"),
        ("ready", "maint", "maint"),
        ("drain", "ready", "drain"),
        ("drain", "maint", "maint"),
        ("maint", "drain", "maint"),
        ("maint", "ready", "maint"),
    ],
)
def test_the_stricter_of_operator_and_agent_wins(operator: str, agent: str, effective: str) -> None:
    assert status(admin_state=operator, agent_state=agent).effective().admin_state == effective


def test_agent_down_makes_the_server_down_whatever_the_checks_say() -> None:
    record = status(agent_state="down").effective()
    assert record.health == "down"
    assert record.admin_state == "ready"  # the operator's state is untouched


def test_check_down_is_down_even_when_the_agent_says_ready() -> None:
    assert status(health="down", agent_state="ready").effective().health == "down"


@pytest.mark.parametrize(
    ("weight", "percent", "effective"), [(100, 50, 50), (200, 25, 50), (100, 100, 100), (10, 0, 0)]
)
def test_the_agent_weight_is_a_share_of_the_configured_weight(weight: int, percent: int, effective: int) -> None:
    assert status(weight=weight, agent_weight=percent).effective().weight == effective


def test_slowstart_ramp_scales_the_weight_and_never_hides_a_server() -> None:
    assert status(ramp=0.1).effective().weight == 10
    assert status(ramp=0.5).effective().weight == 50
    assert status(weight=3, ramp=0.1).effective().weight == 1  # at least 1 while ramping
    assert status(weight=0, ramp=0.1).effective().weight == 0  # an operator's 0 stays 0
    assert status(ramp=1.0).effective().weight == 100


def test_ramp_and_agent_weight_multiply() -> None:
    assert status(weight=200, agent_weight=50, ramp=0.5).effective().weight == 50


def test_an_emptied_state_file_keeps_the_last_state_until_it_is_written(fixed_load: None, tmp_path: Path) -> None:
    """`echo up > FILE` truncates before it writes: a check in between must not see `up`."""
    state = tmp_path / "state"
    state.write_text("drain\n")
    assert agent_mod.reply(str(state)) == b"drain 42%\n"
    state.write_text("")
    assert agent_mod.reply(str(state)) == b"drain 42%\n"
    state.write_text("up\n")
    assert agent_mod.reply(str(state)) == b"up 42%\n"
    state.unlink()
    assert agent_mod.reply(str(state)) == b"up 42%\n"
    state.write_text("")
    assert agent_mod.reply(str(state)) == b"up 42%\n"


def test_a_state_file_emptied_for_a_while_means_up(fixed_load: None, tmp_path: Path) -> None:
    """`: > FILE` to clear a drain: once past the rewrite grace, empty is `up` again."""
    state = tmp_path / "state"
    state.write_text("drain\n")
    assert agent_mod.reply(str(state)) == b"drain 42%\n"
    state.write_text("")
    past = time.time() - 10
    os.utime(state, (past, past))
    assert agent_mod.reply(str(state)) == b"up 42%\n"
