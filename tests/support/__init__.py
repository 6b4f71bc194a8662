"""Shared test support: tagged backends, free ports, the balancer as a process, raw HTTP."""

from tests.support.backends import RecordedRequest, TaggedBackend, TcpEchoServer, TlsTaggedBackend
from tests.support.http import parse_responses, raw_request
from tests.support.ports import closed_port, free_port
from tests.support.process import BalancerProcess, run_balancer, wait_until
from tests.support.tools import on_ci, require_tool

__all__ = [
    "BalancerProcess",
    "RecordedRequest",
    "TaggedBackend",
    "TcpEchoServer",
    "TlsTaggedBackend",
    "closed_port",
    "free_port",
    "on_ci",
    "parse_responses",
    "raw_request",
    "require_tool",
    "run_balancer",
    "wait_until",
]
