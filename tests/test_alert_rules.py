"""Alert rules: promtool checks and unit tests, and the rules' ties to metrics and docs."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import chat.metrics  # noqa: F401 - registers the netra metrics
from tests.helpers import require

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
DASHBOARD = ROOT / "ops" / "grafana" / "netra.json"

# The project has no YAML parser (promtool validates the files); these patterns read the
# two files as they are written: one `- alert:` line per rule, one `alertname:` per case.
ALERT = re.compile(r"^\s*- alert:\s*(\w+)\s*$", re.MULTILINE)
METRIC = re.compile(r"\bnetra_\w+")
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs promtool from the repository root; skips loudly (or fails) when it is missing."""
    require(
        "promtool",
        shutil.which("promtool") is not None,
        "promtool not on PATH (apt-get install prometheus)",
    )
    return subprocess.run(
        ["promtool", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alert_names() -> list[str]:
    """The alert names defined in alerts.yml, in file order."""
    return ALERT.findall(RULES.read_text())


def rule_blocks() -> dict[str, str]:
    """Each alert's text in alerts.yml, from its `- alert:` line to the next one."""
    text = RULES.read_text()
    matches = list(ALERT.finditer(text))
    ends = [m.start() for m in matches[1:]] + [len(text)]
    return {m.group(1): text[m.start() : end] for m, end in zip(matches, ends, strict=True)}


def rule_test_cases() -> dict[str, list[bool]]:
    """For each alertname in alerts_test.yml, whether each of its cases expects it to fire."""
    cases: dict[str, list[bool]] = {}
    text = RULE_TESTS.read_text()
    for case in re.split(r"^\s*- eval_time:", text, flags=re.MULTILINE)[1:]:
        name = re.search(r"^\s*alertname:\s*(\w+)", case, re.MULTILINE)
        expected = re.search(r"^\s*exp_alerts:(.*)$", case, re.MULTILINE)
        assert name and expected, f"unreadable test case:\n{case}"
        fires = expected.group(1).strip() != "[]"
        cases.setdefault(name.group(1), []).append(fires)
    return cases


def dashboard_queries() -> list[str]:
    """The PromQL expressions of the Grafana dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exposed_metric_names() -> set[str]:
    """Sample names the registry exposes for the netra metrics, whether or not they have data."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("netra_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
            names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(RULES.relative_to(ROOT)))
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


@pytest.mark.promtool
def test_promtool_rule_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    print(result.stdout, result.stderr)
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = rule_test_cases()
    names = alert_names()
    assert names, "no alerts found in alerts.yml"
    for name in names:
        assert True in cases.get(name, []), f"{name}: no promtool case where it fires"
        assert False in cases.get(name, []), f"{name}: no promtool case where it stays quiet"
    assert set(cases) <= set(names), f"tests name unknown alerts: {set(cases) - set(names)}"


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for name, block in rule_blocks().items():
        assert re.search(r"^\s*severity:\s*(critical|high|warning)\s*$", block, re.MULTILINE), name
        assert re.search(r"^\s*summary:\s*\S", block, re.MULTILINE), f"{name}: no summary"
        assert re.search(r"^\s*runbook:\s*\S", block, re.MULTILINE), f"{name}: no runbook"


def test_runbook_links_point_at_sections_of_operations_md() -> None:
    headings = re.findall(r"^#+\s+(.+?)\s*$", OPERATIONS.read_text(), re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    for name, block in rule_blocks().items():
        links = re.findall(r"docs/operations\.md#([\w-]+)", block)
        assert links, f"{name}: the runbook does not point at docs/operations.md"
        for anchor in links:
            assert anchor in anchors, f"{name}: docs/operations.md has no section #{anchor}"


@pytest.mark.parametrize("path", [RULES, DASHBOARD], ids=lambda p: p.name)
def test_every_metric_used_exists_in_chat_metrics(path: Path) -> None:
    referenced = set(METRIC.findall(path.read_text()))
    assert referenced, f"no netra_ metric found in {path.name}"
    exposed = exposed_metric_names()
    missing = sorted(referenced - exposed)
    assert not missing, f"{path.name} uses metrics chat/metrics.py does not expose: {missing}"


@pytest.mark.promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool has no bare query parser; recording rules are checked with the same one.
    rules = tmp_path / "dashboard_rules.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(dashboard_queries()):
        lines += [
            f"      - record: netra_dashboard_query_{number}",
            f"        expr: {json.dumps(expr)}",
        ]
    rules.write_text("\n".join(lines) + "\n")
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, (
        f"a dashboard query does not parse:\n{result.stdout}{result.stderr}"
    )


def test_the_metric_check_sees_a_renamed_metric() -> None:
    exposed = exposed_metric_names()
    assert "netra_ws_connections_current" in exposed
    assert "netra_ws_connections_total" in exposed
    assert "netra_event_delivery_seconds_bucket" in exposed
    assert "netra_ws_connections" not in exposed, "a counter is exposed only with _total"
    assert "netra_runs_active_total" not in exposed, "a gauge has no _total"
