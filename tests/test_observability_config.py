"""The dashboards, alert rules and their provisioning agree with promtool, the metric catalogue,
the runbook and each other.

Nothing here needs Prometheus or Grafana running; promtool (Debian's `prometheus` package, which
`make install` and `.ci/run` install when they can) checks the rules and runs their unit tests,
and a test that cannot find it fails rather than skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import promql

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "herald.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

DATASOURCE_UID = "prometheus"
GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards"
CHANNELS = ("email", "sms", "push")
SEVERITIES = {"critical", "warning"}

INSTALL_PROMTOOL = (
    "promtool is not installed: it is in Debian's `prometheus` package (as root: "
    "`apt-get install -y prometheus`, which `make install` does when it runs as root), or take "
    "it from a release at https://prometheus.io/download/ and put it on PATH"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail(INSTALL_PROMTOOL)
    return subprocess.run(
        [executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")["services"]
    return services


def alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in promql.rule_files()
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in alerts()}


# -- (a) promtool ---------------------------------------------------------------------------------


def test_there_are_rules_and_rule_tests() -> None:
    assert promql.rule_files(), "no deploy/prometheus/rules/*.yml"
    assert RULE_TESTS, "no deploy/prometheus/tests/*.yml"


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", *map(str, promql.rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_runs_the_rule_unit_tests() -> None:
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    unknown = (fired | quiet) - alert_names()
    assert not unknown, f"tests of no alert: {sorted(unknown)}"
    assert not alert_names() - fired, f"never fires in a test: {sorted(alert_names() - fired)}"
    assert not alert_names() - quiet, f"never checked quiet: {sorted(alert_names() - quiet)}"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in alerts():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{name}: no {key}"
        assert rule.get("for"), f"{name}: fires on a single evaluation"


def test_service_down_covers_every_herald_job() -> None:
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    herald_jobs = {job for job in jobs if job.startswith("herald-")}
    assert len(herald_jobs) == 5
    [rule] = [rule for rule in alerts() if rule["alert"] == "HeraldServiceDown"]
    assert 'up{job=~"herald-.*"} == 0' in rule["expr"]
    for job in herald_jobs:  # a service found through DNS has no `up` at all when it is gone
        assert f'absent(up{{job="{job}"}})' in rule["expr"], job


GRAFANA_INTERVALS = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}"
)
GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced as Grafana would, roughly: intervals
    by a duration, the others (always inside a label matcher's string) by a regex."""
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_INTERVALS.sub("5m", expr))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    expressions = [e for p in promql.dashboard_files() for e in promql.dashboard_expressions(p)]
    assert expressions
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": as_promql(e.expr)}
        for i, e in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    if result.returncode != 0:
        output = result.stdout + result.stderr
        where = {f"query_{i}:": e.where for i, e in enumerate(expressions)}
        for key, name in where.items():  # name the panels, not the generated rules
            output = output.replace(f"dashboard:{key}check", name)
        pytest.fail(output)


# -- (b) dashboards -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", promql.dashboard_files(), ids=lambda p: p.name)
def test_every_panel_queries_prometheus(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard.get("uid")
    assert dashboard.get("title")
    ids = [panel["id"] for panel in promql.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    datasource_variables = {
        v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"
    }
    allowed = {DATASOURCE_UID} | {f"${{{name}}}" for name in datasource_variables}
    for panel in promql.panels(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        assert "gridPos" in panel, title
        targets = panel.get("targets", [])
        assert any(str(t.get("expr", "")).strip() for t in targets), f"{title}: no query"
        for source in [panel.get("datasource")] + [t.get("datasource") for t in targets]:
            if source is not None:
                assert source.get("uid") in allowed, f"{title}: data source {source}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "datasource":
            assert variable["query"] == "prometheus"
            assert variable["current"]["value"] == DATASOURCE_UID
        elif variable["type"] == "query":
            assert variable["datasource"]["uid"] in allowed


def test_the_dashboards_are_the_overview_and_one_per_channel() -> None:
    names = {path.name for path in promql.dashboard_files()}
    expected = {"herald-overview.json"} | {f"herald-channel-{c}.json" for c in CHANNELS}
    assert expected <= names
    dashboards = [json.loads(path.read_text()) for path in promql.dashboard_files()]
    uids = [d["uid"] for d in dashboards]
    assert len(uids) == len(set(uids)), "dashboard uids repeat"
    for channel in CHANNELS:
        board = json.loads((promql.DASHBOARDS / f"herald-channel-{channel}.json").read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert "provider" in variables, channel
        query = variables["provider"]["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert f'channel="{channel}"' in text, f"{channel}: providers of another channel"
        for expression in promql.dashboard_expressions(
            promql.DASHBOARDS / f"herald-channel-{channel}.json"
        ):  # every query of a channel's dashboard is about that channel
            assert f'channel="{channel}"' in expression.expr or (
                f'job="herald-channel-{channel}"' in expression.expr
            ), expression.where


def test_the_overview_shows_what_the_issue_asks() -> None:
    board = json.loads((promql.DASHBOARDS / "herald-overview.json").read_text())
    used = {
        name
        for expression in promql.dashboard_expressions(promql.DASHBOARDS / "herald-overview.json")
        for name in promql.metric_names(expression.expr)
    }
    for metric in (
        "herald_notifications_accepted_total",
        "herald_notifications_sent_total",
        "herald_notification_end_to_end_seconds",
        "herald_notifications_failed_total",
        "herald_retries_total",
        "herald_queue_messages",
        "herald_dead_letters_total",
        "herald_breaker_open",
        "herald_outbox_oldest_age_seconds",
        "herald_campaigns",
    ):
        assert metric in used, f"the overview does not show {metric}"
    assert board["uid"] == "herald-overview"


# -- (c) metric names -----------------------------------------------------------------------------

FIRST_COLUMN = re.compile(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|", re.MULTILINE)
NAMED_WITH_LABELS = re.compile(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)\{[^`]*\}`")


def documented_metrics() -> set[str]:
    """The metrics docs/metrics.md lists: the first column of its tables, and the series its text
    names with their labels (`herald_build_info{service,version}`)."""
    text = METRICS_DOC.read_text()
    return set(FIRST_COLUMN.findall(text)) | set(NAMED_WITH_LABELS.findall(text))


def exported_elsewhere(name: str) -> bool:
    """Series that are not Herald's own: the client library's, Prometheus' and RabbitMQ's."""
    return name == "up" or name.startswith(("process_", "python_", "rabbitmq_"))


def test_the_catalogue_parses() -> None:
    documented = documented_metrics()
    assert len(documented) >= 30
    assert "herald_notification_end_to_end_seconds" in documented


def test_every_metric_read_is_in_the_catalogue() -> None:
    documented = documented_metrics()
    unknown = sorted(
        f"{expression.where}: {name}"
        for expression in promql.all_expressions()
        for name in promql.metric_names(expression.expr)
        if name not in documented and not exported_elsewhere(name)
    )
    assert not unknown, "not in docs/metrics.md:\n" + "\n".join(unknown)


def test_every_query_reads_a_metric() -> None:
    empty = [e.where for e in promql.all_expressions() if not promql.metric_names(e.expr)]
    assert not empty, empty


def test_metric_names_used_are_herald_series() -> None:
    used = promql.metric_names_used()
    assert "herald_notification_end_to_end_seconds" in used
    assert "herald_breaker_open" in used
    assert not {n for n in used if n == "up" or n.startswith("rabbitmq_")}
    assert not {n for n in used if n.endswith(promql.HISTOGRAM_SUFFIXES)}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="herald-api"} == 0', {"up"}),
        (
            'sum by (channel) (rate(herald_x_total{channel=~"$channel"}[$__rate_interval]))',
            {"herald_x_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, lane) (rate(foo_seconds_bucket[5m])))",
            {"foo_seconds"},
        ),
        ("foo_sum / foo_count", {"foo"}),
        ("sum(rate(a_total[5m])) by (channel) / ignoring (reason) b", {"a_total", "b"}),
        ("a * on (queue) group_left (lane, kind) b offset 5m", {"a", "b"}),
        ("a > bool 3 and b unless on(channel) c or d", {"a", "b", "c", "d"}),
        ("SUM BY (x) (y) AND z", {"y", "z"}),
        ('count_values("version", herald_build_info)', {"herald_build_info"}),
        ("topk(10, sum without (instance) (m))", {"m"}),
        ('{__name__="by_name", job="x"}', {"by_name"}),
        ('{"utf8.name", job="x"}', {"utf8.name"}),
        ("rate(m[5m:1m] @ start()) + n @ 1609746000", {"m", "n"}),
        ("# a comment naming not_a_metric\nreal_metric", {"real_metric"}),
        ('label_replace(v, "dst", "$1", "src", "(.*)")', {"v"}),
        ("absent(x) or vector(1) * 1e3 - 0x1f + Inf + NaN", {"x"}),
        ("deriv(g[10m]) > 0", {"g"}),
        ("min_over_time(herald:recorded:rate5m[1h])", {"herald:recorded:rate5m"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert promql.metric_names(expr) == names


@pytest.mark.parametrize(
    ("query", "expressions"),
    [
        (
            'label_values(herald_deliveries_total{channel="email"}, provider)',
            ['herald_deliveries_total{channel="email"}'],
        ),
        ("label_values(provider)", []),
        ("label_names()", []),
        ("metrics(herald_.*)", []),
        ("query_result(topk(5, m))", ["topk(5, m)"]),
        ("sum(m)", ["sum(m)"]),
    ],
)
def test_templating_expressions(query: str, expressions: list[str]) -> None:
    assert promql.templating_expressions(query) == expressions


def test_panels_include_collapsed_rows_and_old_rows() -> None:
    dashboard = {
        "panels": [
            {"type": "row", "collapsed": True, "panels": [{"id": 2, "targets": [{"expr": "a"}]}]},
            {"id": 3, "targets": [{"expr": "b"}]},
        ],
        "rows": [{"panels": [{"id": 4, "targets": [{"expr": "c"}]}]}],
    }
    exprs = [t["expr"] for p in promql.panels(dashboard) for t in p.get("targets", [])]
    assert exprs == ["a", "b", "c"]


def test_a_stray_character_is_an_error() -> None:
    with pytest.raises(promql.PromQLSyntaxError):
        promql.metric_names("sum(m) ; drop")


# -- (d) provisioning -----------------------------------------------------------------------------


def test_grafana_reads_prometheus_under_the_provisioned_uid() -> None:
    document = load_yaml(DATASOURCES)
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose_services()


def test_grafana_loads_the_dashboards_directory() -> None:
    document = load_yaml(DASHBOARD_PROVIDERS)
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == GRAFANA_DASHBOARDS_PATH


def mounts(service: str) -> dict[str, tuple[str, bool]]:
    """Container path -> (host path relative to the repository, read-only) of a service."""
    result: dict[str, tuple[str, bool]] = {}
    for volume in compose_services()[service].get("volumes", []):
        source, target, *mode = str(volume).split(":")
        result[target] = (source.removeprefix("./"), mode == ["ro"])
    return result


def test_compose_runs_grafana_with_provisioning_and_dashboards() -> None:
    grafana = compose_services()["grafana"]
    assert "profiles" not in grafana  # part of the default `docker compose up`
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin a Grafana release"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    volumes = mounts("grafana")
    assert volumes["/etc/grafana/provisioning"] == ("deploy/grafana/provisioning", True)
    assert volumes[GRAFANA_DASHBOARDS_PATH] == ("deploy/grafana/dashboards", True)
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert (promql.DASHBOARDS / Path(home).relative_to(GRAFANA_DASHBOARDS_PATH)).exists()


def test_prometheus_loads_the_rules_compose_mounts() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    loaded = {path for pattern in config["rule_files"] for path in PROMETHEUS_DIR.glob(pattern)}
    assert set(promql.rule_files()) <= loaded
    volumes = mounts("prometheus")
    assert volumes["/etc/prometheus/prometheus.yml"] == ("deploy/prometheus/prometheus.yml", True)
    for pattern in config["rule_files"]:  # relative to the config file, in the container too
        directory = str(Path("/etc/prometheus") / Path(pattern).parent)
        assert volumes.get(directory) == (f"deploy/prometheus/{Path(pattern).parent}", True)


# -- (e) runbook ----------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    in_code = False
    found: list[tuple[int, str]] = []
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(markdown: str) -> set[str]:
    explicit = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", markdown))
    return {github_anchor(text) for _, text in headings(markdown)} | explicit


def test_every_alert_links_its_runbook_entry() -> None:
    available = anchors(OPERATIONS_DOC.read_text())
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/operations.md", f"{rule['alert']}: {url}"
        assert anchor in available, f"{rule['alert']}: docs/operations.md has no #{anchor}"
        assert anchor == github_anchor(rule["alert"]), f"{rule['alert']}: its own entry"


def test_the_runbook_has_an_entry_per_alert_and_no_other() -> None:
    entries: list[str] = []
    in_runbook = False
    for level, text in headings(OPERATIONS_DOC.read_text()):
        if level <= 2:
            in_runbook = text == "Runbook"
        elif in_runbook and level == 3:
            entries.append(text)
    assert sorted(entries) == sorted(alert_names())


def test_github_anchor() -> None:
    assert github_anchor("HeraldServiceDown") == "heraldservicedown"
    assert github_anchor("The latency objective: p99 (60 s)") == "the-latency-objective-p99-60-s"
