"""What rank 0 calls to show a run live: `open`, `publish` often, `close` once.

    publisher = LivePublisher.open(output, metrics_port, discovery_dir, labels)
    publisher.publish(snapshot)      # cheap; never raises
    publisher.close(final_snapshot)  # the last word: live.json says "finished", the endpoint stops

`open` starts the HTTP endpoint (server.py) when a port or a discovery folder is given (a
discovery folder alone means any free port: Prometheus learns the port from the entry), and checks
the discovery folder can be written. `publish` only swaps in the latest snapshot: the endpoint
renders it when scraped, and a writer thread publishes the files (the discovery entry once the
first snapshot names the job, `<output>.d/live.json` at most every LIVE_EVERY_S, less often when
writing takes more than WRITE_SHARE of the time), so a slow shared filesystem never holds rank
0's loop. File errors are logged, once until they clear, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from pathlib import Path

from onepiece_hpc.errors import UserError
from onepiece_hpc.observe.discovery import DiscoveryEntry, entry_labels, entry_name, target_labels
from onepiece_hpc.observe.live import LiveSnapshot
from onepiece_hpc.observe.live_file import LiveRecord, live_path, write_live
from onepiece_hpc.observe.server import MetricsServer

log = logging.getLogger(__name__)

LIVE_EVERY_S = 2.0
#: the files may take at most this share of the time: a snapshot of thousands of ranks takes a
#: while to write as JSON, and the writer thread shares the interpreter with rank 0's loop
WRITE_SHARE = 0.05
ANY_INTERFACE = ("", "0.0.0.0")


class LivePublisher:
    """The run's live view: an optional endpoint, an optional discovery entry, and live.json."""

    def __init__(self, output: Path, port: int | None, entry: DiscoveryEntry | None, labels: dict[str, str],
                 bind_host: str, advertise_host: str | None, live_every_s: float) -> None:
        self.output = output
        self._entry, self._labels = entry, labels
        self._latest: LiveSnapshot | None = None
        self._flushed: LiveSnapshot | None = None
        self._server = MetricsServer(lambda: self._latest, bind_host, port) if port is not None else None
        self._host = socket.gethostname()
        if advertise_host is None:
            advertise_host = bind_host if bind_host not in ANY_INTERFACE else self._host
        self._advertised = advertise_host
        self._every = live_every_s
        self._live_path = live_path(output)
        self._failing: set[str] = set()  # what failed last time, so it is logged once until it works
        self._closed = False
        self._wake, self._closing = threading.Event(), threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="onepiece-live", daemon=True)
        self._writer.start()
        if self._server is not None:
            log.info("live metrics on %s/metrics", self.endpoint)

    @classmethod
    def open(cls, output: Path, metrics_port: int | None, discovery_dir: Path | None,
             labels: dict[str, str], *, bind_host: str = "", advertise_host: str | None = None,
             live_every_s: float = LIVE_EVERY_S) -> LivePublisher:
        """Start publishing for `output`. `labels` go on the discovery entry: `job_name`, `output`,
        `slurm_job` and `host` set its `onepiece_*` labels (else they come from the snapshots),
        others are added as they are. Raises UserError for a port that is taken or not allowed, a
        discovery folder that can't be written, or a bad label name."""
        output = Path(output).absolute()
        if metrics_port is not None and (isinstance(metrics_port, bool) or not isinstance(metrics_port, int)
                                         or not 0 <= metrics_port <= 65535):
            raise UserError(f"metrics port {metrics_port!r}: not a TCP port; fix: give 1 to 65535, or 0 for any "
                            "free port")
        labels = entry_labels(labels)
        entry = None
        if discovery_dir is not None:
            from onepiece_hpc.environment import slurm_job

            entry = DiscoveryEntry(Path(discovery_dir), entry_name(str(output), slurm_job()[0],
                                                                   socket.gethostname()))
        port = metrics_port if metrics_port is not None else (0 if entry is not None else None)
        return cls(output, port, entry, labels, bind_host, advertise_host, live_every_s)

    @property
    def endpoint(self) -> str:
        """`http://host:port` of the endpoint, "" when there is none."""
        return f"http://{self._advertised}:{self._server.port}" if self._server else ""

    @property
    def target(self) -> str:
        return f"{self._advertised}:{self._server.port}" if self._server else ""

    def publish(self, snapshot: LiveSnapshot) -> None:
        try:
            first = self._latest is None
            self._latest = snapshot
            if first:
                self._wake.set()  # the discovery entry and live.json as soon as there is something to show
        except Exception:  # noqa: BLE001 (publishing must never stop the run)
            log.exception("publishing the live snapshot failed")

    def close(self, final_snapshot: LiveSnapshot | None, wait_for_scrape_s: float = 0.0) -> None:
        """Publish the last snapshot (phase "finished"; None: a run that never opened its output has
        none), wait up to `wait_for_scrape_s` for one more scrape so Prometheus holds the final
        numbers, then stop the endpoint and remove the entry. Never raises (it runs as a run ends,
        maybe on its way out with an error of its own); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close(final_snapshot, wait_for_scrape_s)
        except Exception:  # noqa: BLE001
            log.exception("closing the live publisher failed")

    def _close(self, final_snapshot: LiveSnapshot | None, wait_for_scrape_s: float) -> None:
        if final_snapshot is not None:
            if final_snapshot.phase != "finished":
                final_snapshot = dataclasses.replace(final_snapshot, phase="finished")
            self._latest = final_snapshot
        self._closing.set()
        self._wake.set()
        self._writer.join(timeout=30)
        final_at = time.monotonic()
        self._flush()
        if self._server is not None and final_snapshot is not None:
            deadline = final_at + wait_for_scrape_s
            while self._server.last_scrape < final_at and time.monotonic() < deadline:
                time.sleep(0.05)
        if self._entry is not None:
            self._entry.remove()
        if self._server is not None:
            self._server.stop()

    def _write_loop(self) -> None:
        pause = self._every
        while not self._closing.is_set():
            self._wake.wait(pause)
            self._wake.clear()
            if not self._closing.is_set():
                started = time.monotonic()
                self._flush()
                pause = max(self._every, (time.monotonic() - started) / WRITE_SHARE)

    def _flush(self) -> None:
        snapshot = self._latest
        if snapshot is None or snapshot is self._flushed:
            return
        self._flushed = snapshot
        if self._entry is not None:
            self._attempt("discovery entry", lambda: self._entry.write(self.target, self._target_labels(snapshot)))
        if not self._live_path.parent.is_dir():  # the store makes the folder with the output; never before it
            self._note_failure("live.json", f"{self._live_path.parent} is not there")
            return
        self._attempt("live.json", lambda: write_live(self._live_path, LiveRecord(
            snapshot, self.endpoint, self._host, os.getpid())))

    def _target_labels(self, snapshot: LiveSnapshot) -> dict[str, str]:
        return target_labels(str(self.output), snapshot.job_name, snapshot.slurm_job, self._host, os.getpid(),
                             self._labels)

    def _attempt(self, what: str, write) -> None:
        try:
            write()
        except OSError as err:
            self._note_failure(what, str(err))
            return
        if what in self._failing:
            self._failing.discard(what)
            log.warning("writing the %s works again", what)

    def _note_failure(self, what: str, why: str) -> None:
        if what not in self._failing:
            self._failing.add(what)
            log.warning("could not write the %s (the run goes on): %s", what, why)
