"""The HTTP endpoint a scraper reads: `/metrics` (Prometheus text) and `/snapshot.json`.

A stdlib ThreadingHTTPServer on a daemon thread, so a stuck client can never hold rank 0's loop or
keep the process alive. The server holds no state of its own: each request renders the latest
snapshot that `source()` returns, so a scrape costs the loop nothing.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from onepiece_hpc.errors import UserError
from onepiece_hpc.observe.live import LiveSnapshot
from onepiece_hpc.observe.metrics import CONTENT_TYPE, exposition

log = logging.getLogger(__name__)

SnapshotSource = Callable[[], "LiveSnapshot | None"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: SnapshotSource) -> None:
        self.source = source
        self.last_scrape = 0.0  # time.monotonic() of the latest /metrics request
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "onepiece-metrics"

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        snapshot = self.server.source()
        if path == "/metrics":
            self.server.last_scrape = time.monotonic()
            body = exposition(snapshot, time.time()) if snapshot is not None else ""
            self._reply(200, CONTENT_TYPE, body)
        elif path == "/snapshot.json":
            if snapshot is None:
                self._reply(503, "text/plain; charset=utf-8", "no snapshot yet\n")
            else:
                self._reply(200, "application/json", snapshot.to_json())
        elif path == "/":
            self._reply(200, "text/plain; charset=utf-8", "onepiece-hpc live metrics: /metrics, /snapshot.json\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", "not found: try /metrics or /snapshot.json\n")

    def _reply(self, code: int, content_type: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's signature)
        log.debug("metrics endpoint: " + format, *args)


class MetricsServer:
    """Serves `source()`'s snapshot on `host:port` (port 0: a free one) until `stop`."""

    def __init__(self, source: SnapshotSource, host: str = "", port: int = 0) -> None:
        try:
            self._server = _Server((host, port), source)
        except OSError as err:
            raise UserError(_bind_problem(host, port, err)) from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="onepiece-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def last_scrape(self) -> float:
        return self._server.last_scrape

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def check_port(port: int, host: str = "") -> None:
    """UserError now if `port` can't be listened on (taken, or privileged), before any rank starts;
    0 (any free port) always can."""
    if port == 0:
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((host, port))
    except OSError as err:
        raise UserError(_bind_problem(host, port, err)) from None
    finally:
        probe.close()


def _bind_problem(host: str, port: int, err: OSError) -> str:
    where = f"{host or 'all interfaces'} port {port}"
    if err.errno == errno.EADDRINUSE:
        return (f"metrics port: {where} is already in use by another program; fix: choose another "
                "--metrics-port (or metrics: port: in the job file), or 0 for any free port")
    if err.errno == errno.EACCES:
        return (f"metrics port: not allowed to listen on {where} (ports below 1024 need privileges); "
                "fix: choose a port above 1024, or 0 for any free port")
    return f"metrics port: cannot listen on {where}: {err.strerror or err}; fix: choose another port or host"
