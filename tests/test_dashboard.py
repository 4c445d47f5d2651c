"""The Grafana dashboard's model (monitoring/grafana/onepiece-dashboard.json) holds together as a
Grafana import would need it: every query goes to the datasource variable, every variable it
uses is defined, panels have unique ids and do not overlap, and it names only metrics we expose.
(Grafana itself is not installed here; test_prometheus.py runs every query against Prometheus.)"""

from __future__ import annotations

import json
import re

import pytest

from live_support import snapshot
from onepiece_hpc.observe.metrics import exposition
from support import REPO

pytestmark = pytest.mark.timeout(30)

MODEL = json.loads((REPO / "monitoring" / "grafana" / "onepiece-dashboard.json").read_text(encoding="utf-8"))
GRAFANA_OWN = {"__rate_interval", "__interval", "__range"}


def _panels(panels=None):
    for panel in MODEL["panels"] if panels is None else panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_every_query_asks_the_datasource_variable_and_uses_defined_variables():
    variables = {v["name"]: v for v in MODEL["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "slurm_job"} <= set(variables)
    through_datasource = {"type": "prometheus", "uid": "${datasource}"}
    exprs = []
    for panel in _panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == through_datasource, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == through_datasource, panel["title"]
            assert 'onepiece_job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            exprs.append(target["expr"])
    for variable in ("job", "slurm_job"):
        assert variables[variable]["datasource"] == through_datasource
        exprs.append(variables[variable]["query"]["query"])
    used = {name for expr in exprs for name in re.findall(r"\$(\w+)", expr)}
    assert used - GRAFANA_OWN <= set(variables), used


def test_panels_have_unique_ids_and_do_not_overlap():
    ids = [p["id"] for p in _panels()]
    assert len(set(ids)) == len(ids)
    taken: set[tuple[int, int]] = set()
    for panel in _panels():
        box = panel["gridPos"]
        assert 0 <= box["x"] and box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_names_only_metrics_we_expose():
    ours = set(re.findall(r"^(onepiece_\w+)", exposition(snapshot(), now=0), re.M))
    named = {name for panel in _panels() for target in panel.get("targets", [])
             for name in re.findall(r"\bonepiece_[a-z_]+\b", target["expr"])} - {"onepiece_job", "onepiece_slurm_job"}
    assert named and named <= ours, named - ours
    shown = {"onepiece_items_done_total", "onepiece_rate_items_per_second", "onepiece_eta_seconds",
             "onepiece_stage_busy_ratio", "onepiece_stage_backlog_units", "onepiece_moves_by_reason_total",
             "onepiece_rank_memory_bytes", "onepiece_items_failed_total"}
    assert shown <= named, shown - named
