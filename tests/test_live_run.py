"""A real staged run with live metrics on: its discovery entry appears while it runs and names an
endpoint whose /metrics and /snapshot.json describe the run; `onepiece status OUT --watch` follows
it to the end; afterwards the entry is gone and live.json says finished with every item done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onepiece_hpc.observe.live import LiveSnapshot
from onepiece_hpc.observe.live_file import live_path, read_live
from onepiece_hpc.store.reader import view_of
from onepiece_hpc.store.telemetry import latest_run
from support import done_count, invoke, running, wait_until, write_job

pytestmark = [pytest.mark.timeout(400), pytest.mark.mpi]

ITEMS = 12


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read().decode("utf-8")


def test_a_staged_run_publishes_its_metrics_and_the_watch_follows_it(tmp_path):
    job = write_job(tmp_path, [f"prompt {i}" for i in range(ITEMS)],
                    params="{steps: 6, guidance: 5.0, height: 64, width: 64}")
    output = tmp_path / "out" / "t.h5"
    discovery = tmp_path / "discovery"
    env = {**os.environ, "ONEPIECE_METRICS_DISCOVERY_DIR": str(discovery)}
    with running("run", job, "-n", "4", "--metrics-port", "0", env=env) as proc:
        entry = wait_until(proc, lambda: list(discovery.glob("onepiece-*.json")), "a discovery entry", 240)
        (target,) = json.loads(entry[0].read_text(encoding="utf-8"))
        assert target["labels"]["onepiece_job"] == "t"
        assert target["labels"]["onepiece_output"] == str(output)
        endpoint = f"http://{target['targets'][0]}"
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(_get(f"{endpoint}/metrics")) for s in f.samples}
        committed_after_scrape = done_count(output)  # the snapshot was made before this read
        assert samples[("onepiece_items_planned", ())] == ITEMS
        assert samples[("onepiece_items_done_total", ())] <= committed_after_scrape
        assert {dict(labels).get("stage") for name, labels in samples if name == "onepiece_stage_ranks"} \
            == {"encode", "denoise", "decode"}
        snapshot = LiveSnapshot.from_json(_get(f"{endpoint}/snapshot.json"))
        assert snapshot.items_total == ITEMS and snapshot.phase in ("running", "draining")
        wait_until(proc, lambda: live_path(output).exists(), "live.json", 60)
        watch = subprocess.run([sys.executable, "-m", "onepiece_hpc.cli.main", "status", str(output), "--watch",
                                "--every", "0.5"], capture_output=True, text=True, timeout=300)
        proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.rstrip().endswith("note: the run finished"), watch.stdout
    assert f"items {ITEMS}/{ITEMS}" in watch.stdout
    assert list(discovery.iterdir()) == []
    record = read_live(Path(output))
    assert record.snapshot.phase == "finished" and record.snapshot.items_done == ITEMS
    # the numbers served while it ran, against the finished output
    status = json.loads(invoke("status", output, "--json").out)
    assert status["items_done"] == ITEMS == done_count(output)
    assert samples[("onepiece_work_planned_megapixel_forwards", ())] == pytest.approx(status["work_total"])
    assert samples[("onepiece_work_done_megapixel_forwards_total", ())] <= status["work_done"] + 1e-9
    assert record.snapshot.work_done == pytest.approx(status["work_done"])
    failed = json.loads(invoke("inspect", output, "--json").out)["items_failed"]
    assert samples[("onepiece_items_failed_total", ())] == 0 == failed
    assert record.snapshot.moves == len(latest_run(view_of(output)).moves)


def test_a_taken_metrics_port_is_refused_before_any_rank_starts(tmp_path):
    import socket

    from support import run_cli

    job = write_job(tmp_path, ["one prompt"])
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("run", job, "-n", "4", "--metrics-port", str(port), timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"port {port} is already in use" in done.stderr and "fix:" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "t.h5").exists()
