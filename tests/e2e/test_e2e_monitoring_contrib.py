"""contrib/'s Prometheus alert rules and Grafana dashboard load as shipped and watch real metrics.

What an operator does with them: `promtool check rules` on the rules file, import the
dashboard JSON, and expect every query to find the metric it names. So: promtool checks
the rules and every dashboard query (as recording rules), `promtool test rules` feeds the
alerts a 5xx burst and a dead server and expects them to fire, and every metric name they
use is one a running balancer exports.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.support import TaggedBackend, free_port, require_tool, wait_until
from tests.support.site import Site

pytestmark = pytest.mark.e2e

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "balancer-alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "balancer-dashboard.json"
_METRIC = re.compile(r"\bbalancer_[a-z_]+")


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]]
    return exprs


def _as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would."""
    expr = expr.replace("$__rate_interval", "5m")
    return re.sub(r"\$(frontend|backend)", ".*", expr)


def test_the_alert_rules_pass_promtool() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"] and dashboard["schemaVersion"] >= 30
    for panel in dashboard["panels"]:
        assert {"id", "type", "title", "gridPos", "targets", "datasource"} <= set(panel), panel.get("title")
    queries = [_as_promql(e) for e in _dashboard_exprs() if not e.startswith("label_values(")]
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def test_the_alerts_fire_on_a_5xx_burst_and_a_dead_server(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    web = {"backend": "web"}
    tests: dict[str, Any] = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 600 responses a minute, a third of them 5xx
                    _series("balancer_backend_http_responses_total", {**web, "code": "2xx"}, "0+400x20"),
                    _series("balancer_backend_http_responses_total", {**web, "code": "5xx"}, "0+200x20"),
                    _series("balancer_server_up", {**web, "server": "s1"}, "1x20"),
                    _series("balancer_server_up", {**web, "server": "s2"}, "1 1 0x18"),
                    _series("balancer_server_status", {**web, "server": "s2", "state": "maint"}, "0x20"),
                    _series("balancer_server_status", {**web, "server": "s1", "state": "maint"}, "0x20"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "BalancerBackendHigh5xxRatio",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "backend": "web"},
                                "exp_annotations": {
                                    "summary": "Backend web: 33.33% of responses are 5xx",
                                    "description": "More than 5% of the responses of backend web were 5xx over the "
                                    "last 5 minutes.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "BalancerServerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "backend": "web", "server": "s2"},
                                "exp_annotations": {
                                    "summary": "Server web/s2 is down",
                                    "description": "Health checks have failed for web/s2 for a minute.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "15m", "alertname": "BalancerBackendNoServerUp", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "alerts-test.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_rules_and_dashboard_use_is_exported(site: Site, tagged: Any) -> None:
    (s1,) = tagged("s1")
    assert isinstance(s1, TaggedBackend)
    admin = free_port()
    site.start(
        site.global_toml()
        + f'[admin]\nbind = "127.0.0.1:{admin}"\n'
        + f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "web"\n'
        + f'[[backend]]\nname = "web"\n[[backend.server]]\nname = "s1"\naddress = "{s1.address}"\n',
        ports=[site.port, admin],
    )

    def exported() -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("balancer_")}

    names = wait_until(exported, timeout=5, what="/metrics")
    used = set(_METRIC.findall(RULES.read_text())) | {m for e in _dashboard_exprs() for m in _METRIC.findall(e)}
    missing = sorted(used - names)
    assert not missing, f"used by contrib/ but not exported: {missing}"
