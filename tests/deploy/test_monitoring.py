"""The shipped Prometheus rules and Grafana dashboard: valid, their alerts fire when they
should (`promtool test rules`), and every metric they name is on a live /metrics page."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, StartService
from tests.support.http import admin_url

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mailer.json"
RULE_TESTS = Path(__file__).with_name("alerts_test.yml")
METRIC = re.compile(r"\b(?:mailer|process|python)_[a-z0-9_]+\b")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_info", "_created")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing (Debian's prometheus package; scripts/test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: not skipping)")
        pytest.skip(message)
    return found


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def panel_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in checked.stdout


def test_the_alerts_fire_on_the_series_an_outage_makes() -> None:
    tested = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_is_one_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "mailer-overview"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


async def test_every_metric_named_by_a_rule_or_a_panel_is_on_the_metrics_page(
    config: dict[str, Any], start_service: StartService
) -> None:
    service = await start_service(config, sample_interval=0.2)
    async with (
        aiohttp.ClientSession() as session,
        session.get(admin_url(service) + "/metrics") as response,
    ):
        assert response.status == 200
        page = await response.text()
    shown: set[str] = set()
    for family in text_string_to_metric_families(page):
        shown.add(family.name)  # shown even before its first labelled sample
        shown.update(sample.name for sample in family.samples)

    def on_page(name: str) -> bool:
        bases = [name] + [name.removesuffix(s) for s in SUFFIXES if name.endswith(s)]
        return any(base in shown for base in bases)

    for source, expressions in (("rules", rule_expressions()), ("panels", panel_expressions())):
        named = {name for expr in expressions for name in METRIC.findall(expr)}
        assert len(named) >= 8, (source, named)
        missing = sorted(name for name in named if not on_page(name))
        assert missing == [], f"{source} name metrics /metrics does not show: {missing}"
    assert not on_page("mailer_no_such_metric")
