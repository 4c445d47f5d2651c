"""`onepiece status OUT --watch`: it follows a running job until its snapshot says finished, says
so when the run is gone without a final word, and shows a file's progress once where there is no
live snapshot (a monolithic run, an output from before live snapshots)."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from live_support import HOSTILE, snapshot
from onepiece_hpc.observe.live_file import LiveRecord, live_path, write_live
from onepiece_hpc.observe.publish import LivePublisher
from onepiece_hpc.observe.watch import Sighting, _renderable
from support import invoke, write_job

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def output(tmp_path) -> Path:
    path = tmp_path / "out.h5"
    Path(f"{path}.d").mkdir()
    return path


def _items_lines(text: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"^\S+ (\w+): items (\d+)/1000", text, re.M)]


def test_it_follows_a_running_job_until_it_finishes(output):
    publisher = LivePublisher.open(output, 0, None, {}, bind_host="127.0.0.1", live_every_s=0.1)
    publisher.publish(snapshot(items_done=0))
    deadline = time.monotonic() + 10
    while not live_path(output).exists() and time.monotonic() < deadline:
        time.sleep(0.02)

    def run() -> None:
        for done in range(1, 31):
            time.sleep(0.1)
            publisher.publish(snapshot(items_done=done, unix_time=time.time()))
        publisher.close(snapshot(items_done=1000, eta_s=0.0))

    feeder = threading.Thread(target=run)
    feeder.start()
    result = invoke("status", output, "--watch", "--every", "0.1")
    feeder.join()
    assert result.code == 0, result.err
    seen = _items_lines(result.out)
    assert len(seen) >= 2 and seen[-1] == ("finished", 1000), result.out
    assert [done for _, done in seen] == sorted(done for _, done in seen)
    assert "stages: encode 1 ranks busy 12% backlog 0" in result.out
    assert result.out.rstrip().endswith("note: the run finished")


def test_a_run_gone_without_a_final_word_is_named_and_the_watch_ends(output):
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_live(live_path(output), LiveRecord(snapshot(unix_time=time.time() - 600), "", socket.gethostname(),
                                             dead.pid))
    result = invoke("status", output, "--watch", "--every", "0.1")
    assert result.code == 0, result.err
    assert f"rank 0 (pid {dead.pid} on {socket.gethostname()}) is gone without a final snapshot" in result.out
    assert len(_items_lines(result.out)) == 1


def test_an_old_snapshot_from_another_host_gets_a_note(output):
    record = LiveRecord(snapshot(unix_time=time.time() - 3600, phase="finished"), "", "elsewhere", 1)
    write_live(live_path(output), record)
    assert "note: the run finished" in invoke("status", output, "--watch").out
    from onepiece_hpc.observe.watch import sight

    write_live(live_path(output), LiveRecord(snapshot(unix_time=time.time() - 3600), "http://127.0.0.1:1",
                                             "elsewhere", os.getpid()))
    seen = sight(output)
    assert not seen.over and "no update for 01:00:00 (rank 0 on elsewhere may have stopped)" == seen.note


def test_an_output_without_a_live_snapshot_shows_its_progress_once(tmp_path):
    job = write_job(tmp_path, ["one", "two"])
    assert invoke("run", job, "--monolithic").code == 0
    result = invoke("status", tmp_path / "out/t.h5", "--watch", "--every", "0.1")
    assert result.code == 0, result.err
    assert result.out.startswith("no live snapshot for ")
    assert "items 2/2 done (100% of the work)" in result.out


def test_an_output_not_there_yet_is_said_to_be_so(tmp_path):
    result = invoke("status", tmp_path / "later.h5", "--watch")
    assert result.code == 0 and "the output does not exist yet" in result.out


def test_json_and_watch_together_are_refused(output):
    result = invoke("status", output, "--watch", "--json")
    assert result.code == 2 and "--json and --watch: choose one" in result.err


def test_the_terminal_view_shows_each_stage_and_hostile_names_as_they_are():
    s = snapshot(job_name=HOSTILE, output=HOSTILE)
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(_renderable(Sighting(s, "http://node0:9100", "", False)))
    text = console.export_text()
    for words in ("items   420/1000 (42%)", "rate    2.5 items/s", "ETA     00:03:52", "failed  3",
                  "moves   5 (backlog 3, idle 2)", "max 20.0 GiB (rank 2 on node1)", "[bold]ünï🌸",
                  "from http://node0:9100"):
        assert words in text, (words, text)
    assert re.search(r"denoise\s*│\s*2\s*│\s*97%\s*│\s*6\s*│\s*1\.75\s*│\s*52\s*│\s*20\.0 GiB", text), text
