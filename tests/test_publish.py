"""What rank 0's publisher (observe/publish.py) leaves for others to read: an endpoint that serves
the latest snapshot and stops at close, a discovery entry that appears with the first snapshot and
goes at close, live.json beside the output ending at "finished", and a clear refusal (UserError)
for a taken port, a discovery folder that can't be written, or a bad label name."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from live_support import HOSTILE, snapshot
from onepiece_hpc.errors import UserError
from onepiece_hpc.observe.live import LiveSnapshot
from onepiece_hpc.observe.live_file import read_live
from onepiece_hpc.observe.publish import LivePublisher

pytestmark = pytest.mark.timeout(60)


def wait_for(condition, within: float = 10.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not within {within} s: {condition}")


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode("utf-8")


@pytest.fixture
def output(tmp_path) -> Path:
    """An output path whose data folder is there, as the store makes it before rank 0 publishes."""
    path = tmp_path / HOSTILE.replace("\n", " ").replace("/", "_") / "out.h5"
    Path(f"{path}.d").mkdir(parents=True)
    return path


def test_the_endpoint_serves_the_latest_snapshot_and_stops_at_close(output):
    publisher = LivePublisher.open(output, 0, None, {}, bind_host="127.0.0.1")
    assert publisher.endpoint.startswith("http://127.0.0.1:")
    assert get(publisher.endpoint + "/metrics")[2] == ""  # nothing known yet: an empty, valid scrape
    assert get(publisher.endpoint + "/snapshot.json")[0] == 503
    first = snapshot(items_done=10)
    publisher.publish(first)
    publisher.publish(latest := snapshot(items_done=11, output=HOSTILE))
    code, kind, body = get(publisher.endpoint + "/metrics")
    assert code == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
    done = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert done["onepiece_items_done_total"] == 11
    code, kind, body = get(publisher.endpoint + "/snapshot.json")
    assert code == 200 and kind == "application/json" and LiveSnapshot.from_json(body) == latest
    assert get(publisher.endpoint + "/nothing-here")[0] == 404
    port = publisher._server.port
    publisher.close(latest)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_discovery_entry_appears_with_the_first_snapshot_and_goes_at_close(output, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    folder = tmp_path / "sd" / "made-for-it"
    publisher = LivePublisher.open(output, None, folder, {"team": "vision"}, bind_host="127.0.0.1")
    assert publisher.endpoint, "a discovery folder alone serves on a free port"
    assert list(folder.iterdir()) == []
    publisher.publish(snapshot(job_name=HOSTILE))
    entry = wait_for(lambda: list(folder.glob("*.json")))
    assert [p.name for p in entry] == [p.name for p in folder.iterdir()], "no temporary file is left"
    assert entry[0].name.startswith("onepiece-4242-")
    assert stat.S_IMODE(entry[0].stat().st_mode) == 0o644, "Prometheus may run as another user"
    content = json.loads(entry[0].read_text(encoding="utf-8"))
    assert content == [{"targets": [publisher.target], "labels": {
        "onepiece_job": HOSTILE, "onepiece_output": str(output.absolute()), "onepiece_slurm_job": "4242",
        "onepiece_host": socket.gethostname(), "team": "vision", "__onepiece_pid": str(os.getpid())}}]
    assert get(f"http://{content[0]['targets'][0]}/metrics")[0] == 200
    publisher.close(snapshot())
    assert list(folder.iterdir()) == []


def test_the_runs_own_names_for_the_labels_set_the_entrys_labels(output, tmp_path):
    folder = tmp_path / "sd"
    given = {"job_name": "from-rank-0", "output": "/given/out.h5", "slurm_job": "77"}
    publisher = LivePublisher.open(output, None, folder, given, bind_host="127.0.0.1")
    publisher.publish(snapshot())
    entry = wait_for(lambda: list(folder.glob("*.json")))
    labels = json.loads(entry[0].read_text(encoding="utf-8"))[0]["labels"]
    assert labels == {"onepiece_job": "from-rank-0", "onepiece_output": "/given/out.h5", "onepiece_slurm_job": "77",
                      "onepiece_host": socket.gethostname(), "__onepiece_pid": str(os.getpid())}
    publisher.close(None)  # a run that never opened its output has no last snapshot
    publisher.close(None)
    assert list(folder.iterdir()) == []


def test_a_run_that_never_made_a_snapshot_leaves_nothing(output, tmp_path):
    publisher = LivePublisher.open(output, 0, tmp_path / "sd", {}, bind_host="127.0.0.1")
    publisher.close(None)
    assert list((tmp_path / "sd").iterdir()) == [] and read_live(output) is None


def test_live_json_follows_the_run_and_ends_finished(output):
    publisher = LivePublisher.open(output, None, None, {}, live_every_s=0.1)
    assert publisher.endpoint == ""
    for done in range(5):
        publisher.publish(snapshot(items_done=done))
        time.sleep(0.05)
    wait_for(lambda: (r := read_live(output)) is not None and r.snapshot.items_done == 4)
    publisher.close(snapshot(items_done=7, phase="running"))
    record = read_live(output)
    assert record.snapshot.phase == "finished" and record.snapshot.items_done == 7
    assert record.pid == os.getpid() and record.endpoint == ""
    assert sorted(p.name for p in Path(f"{output}.d").iterdir()) == ["live.json"]


def test_publishing_goes_on_when_the_files_cannot_be_written(output, caplog):
    publisher = LivePublisher.open(output, 0, None, {}, bind_host="127.0.0.1", live_every_s=0.05)
    shutil.rmtree(f"{output}.d")  # the folder is gone: live.json can't be written, the endpoint goes on
    with caplog.at_level(logging.WARNING, logger="onepiece_hpc.observe.publish"):
        for done in range(10):
            publisher.publish(snapshot(items_done=done))
            time.sleep(0.02)
        body = get(publisher.endpoint + "/snapshot.json")[2]
        assert LiveSnapshot.from_json(body).items_done == 9
        publisher.close(snapshot())
    said = [r.getMessage() for r in caplog.records if "live.json" in r.getMessage()]
    assert len(said) == 1, said  # once, not once a snapshot


def test_a_taken_port_is_refused_with_the_fix(output):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError) as err:
            LivePublisher.open(output, port, None, {}, bind_host="127.0.0.1")
    finally:
        taken.close()
    message = str(err.value)
    assert f"127.0.0.1 port {port}" in message
    assert "already in use" in message and "--metrics-port" in message and "0 for any free port" in message


@pytest.mark.parametrize("port", [-1, 70000, "9100", True])
def test_a_port_that_is_not_one_is_refused(output, port):
    with pytest.raises(UserError, match="not a TCP port"):
        LivePublisher.open(output, port, None, {})


def test_a_discovery_dir_that_cannot_be_written_is_refused_with_the_fix(output, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError) as err:
        LivePublisher.open(output, None, blocker / "sd", {})
    message = str(err.value)
    assert str(blocker / "sd") in message and "ONEPIECE_METRICS_DISCOVERY_DIR" in message and "fix:" in message


@pytest.mark.parametrize("name", ["9lives", "with-dash", "__reserved", ""])
def test_a_bad_label_name_is_refused(output, tmp_path, name):
    with pytest.raises(UserError, match="not a Prometheus label name"):
        LivePublisher.open(output, None, tmp_path / "sd", {name: "x"})
