"""A real Prometheus scrapes a publisher it finds through file_sd (monitoring/prometheus.yml with
a test folder and short intervals): the values it stores are the snapshot's, the target carries
the discovery labels, every PromQL expression of the Grafana dashboard parses and returns data,
and the target goes away when the publisher closes.

Prometheus comes from the Debian package `prometheus`; the test installs it when it is missing
and it can (root and apt-get), and is skipped, saying why, only when it can't.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from live_support import expected_samples, snapshot
from onepiece_hpc.observe.publish import LivePublisher
from support import REPO

pytestmark = pytest.mark.timeout(240)

DASHBOARD = REPO / "monitoring" / "grafana" / "onepiece-dashboard.json"
EXAMPLE_CONFIG = REPO / "monitoring" / "prometheus.yml"
TARGET_LABELS = {"job", "instance", "onepiece_job", "onepiece_output", "onepiece_slurm_job", "onepiece_host"}
# what Grafana puts in for its own variables when it sends a panel's query
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "1s", "$__range": "1m"}


def _prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("prometheus is not installed and can't be here (needs root and apt-get): "
                    "apt-get install -y prometheus")
    with open(__file__, "rb") as me:  # one test worker installs at a time
        fcntl.flock(me, fcntl.LOCK_EX)
        if not shutil.which("prometheus"):
            done = subprocess.run(["apt-get", "install", "-y", "-q", "prometheus"], capture_output=True, text=True,
                                  timeout=180, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if done.returncode != 0:
                pytest.skip(f"prometheus is not installed and apt-get could not install it: {done.stderr[-300:]}")
    return shutil.which("prometheus") or pytest.skip("apt-get installed prometheus but it is not on PATH")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    """A Prometheus of our own on 127.0.0.1, its data in a temporary folder."""

    def __init__(self, binary: str, folder: Path, discovery: Path) -> None:
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        scrape = config["scrape_configs"][0]
        scrape.update(scrape_interval="1s", scrape_timeout="1s")
        scrape["file_sd_configs"][0].update(files=[str(discovery / "*.json")], refresh_interval="1s")
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = open(folder / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=folder)
        self.folder = folder
        self.until(lambda: self._ready(), "Prometheus ready", 60)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {(self.folder / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str):
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as err:  # a query that does not parse: Prometheus says why
            raise AssertionError(f"{path} {params}: {err.code} {err.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def until(self, condition, what: str, within: float = 30.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"not within {within} s: {what}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel, rows' panels too."""
    def walk(panels):
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
    return list(walk(json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]))


def _with_variables(expr: str, job: str) -> str:
    for name, value in {**GRAFANA_VARIABLES, "$slurm_job": ".*", "$job": job}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_prometheus_scrapes_what_the_publisher_shows_and_the_dashboard_queries_all_answer(tmp_path):
    binary = _prometheus_binary()
    discovery, output = tmp_path / "discovery", tmp_path / "run" / "out.h5"
    Path(f"{output}.d").mkdir(parents=True)
    (tmp_path / "prometheus").mkdir()
    publisher = LivePublisher.open(output, 0, discovery, {}, bind_host="127.0.0.1")
    stop = threading.Event()

    def run() -> None:  # a job making progress, a snapshot every 0.2 s
        done = 0
        while not stop.wait(0.2):
            done += 1
            publisher.publish(snapshot(items_done=done, work_done=5.0 * done, moves=done // 5,
                                       moves_by_reason={"backlog": done // 5}, unix_time=time.time()))

    feeder = threading.Thread(target=run, daemon=True)
    feeder.start()
    prometheus = Prometheus(binary, tmp_path / "prometheus", discovery)
    try:
        up = prometheus.until(lambda: prometheus.query('up{onepiece_job="harbour"} == 1'), "the target is up", 60)
        labels = up[0]["metric"]
        assert labels == {"__name__": "up", "job": "onepiece", "instance": publisher.target,
                          "onepiece_job": "harbour", "onepiece_output": str(output),
                          "onepiece_slurm_job": "4242", "onepiece_host": socket.gethostname()}
        prometheus.until(lambda: len(prometheus.api("query", query="onepiece_items_done_total[1m]")["result"][0]
                                     ["values"]) >= 6, "six scrapes")
        stop.set()
        feeder.join()
        final = snapshot(items_done=777, work_done=3333.25, moves=9, moves_by_reason={"backlog": 6, "idle": 3},
                         unix_time=time.time())
        publisher.publish(final)
        prometheus.until(lambda: [r["value"][1] for r in prometheus.query("onepiece_items_done_total")] == ["777"],
                         "the final snapshot scraped")
        _stored_values_are_the_snapshots(prometheus, final)

        for title, expr in _dashboard_queries():
            result = prometheus.query(_with_variables(expr, "harbour"))
            assert result, f"dashboard panel {title!r}: {expr} returns no data"
        assert prometheus.api("label/onepiece_job/values", **{"match[]": "onepiece_items_planned"}) == ["harbour"]

        publisher.close(dataclasses.replace(final, unix_time=time.time()), wait_for_scrape_s=10)
        assert list(discovery.iterdir()) == []
        prometheus.until(lambda: not prometheus.api("targets")["activeTargets"], "the target is dropped")
    finally:
        stop.set()
        prometheus.stop()


def _stored_values_are_the_snapshots(prometheus: Prometheus, final) -> None:
    want = expected_samples(final)
    got = {}
    for name in {name for name, _ in want}:
        for row in prometheus.query(name):
            labels = {k: v for k, v in row["metric"].items() if k != "__name__" and k not in TARGET_LABELS}
            got[(name, frozenset(labels.items()))] = float(row["value"][1])
    assert got == want
