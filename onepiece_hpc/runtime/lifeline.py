"""Ranks that `onepiece run -n N` started end when it ends, however it ends.

The launcher runs mpiexec in a session of its own, so neither a closed terminal nor a kill of the
launcher reaches the ranks. It therefore names itself to them (pid, start time, boot) in one
environment variable, and each rank watches that process through a pidfd. Once it is gone, rank 0
stops as on Ctrl-C: units in flight are given up, the output closes in order, and its abort ends
every rank and mpiexec (still starting, with no output open, it leaves at once, which ends them
too). A stage rank waits for that end and leaves by itself if none comes. Ranks started by srun
(or by an mpiexec of the user's own) carry no such variable and are never watched.

The invariant: a rank of a local run outlives its launcher by at most `STAGE_GRACE_S`.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from onepiece_hpc.exit_codes import ExitCode, after_signal

#: the environment variable through which the launcher names itself to the ranks it starts
LAUNCHER_VAR = "ONEPIECE_LAUNCHER"
#: how long rank 0 may take to close the output once its launcher is gone
CLOSE_DEADLINE_S = 10.0
#: how long a stage rank waits for rank 0's abort before it leaves by itself
STAGE_GRACE_S = CLOSE_DEADLINE_S + 5.0
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
log = logging.getLogger("onepiece.lifeline")


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as no other can be: a pid is reused, a pid with its start time on one boot is not."""

    pid: int
    started: int  # clock ticks after boot (/proc/PID/stat, field 22)
    boot: str

    def render(self) -> str:
        return f"{self.pid}:{self.started}:{self.boot}"

    @classmethod
    def parse(cls, text: str) -> ProcessIdentity | None:
        pid, _, rest = text.partition(":")
        started, _, boot = rest.partition(":")
        if not (pid.isdigit() and started.isdigit() and boot):
            return None
        return cls(int(pid), int(started), boot)


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of the process `pid` now, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return ProcessIdentity(pid, int(fields[19]), boot)


def tie_to_this_process(env: Mapping[str, str]) -> dict[str, str]:
    """`env` plus the variable that ties the lives of the ranks started with it to this process."""
    me = identity_of(os.getpid())
    tied = dict(env)
    if me is not None:  # without /proc the ranks can't watch; they run untied as before
        tied[LAUNCHER_VAR] = me.render()
    return tied


def watch_launcher(environ: Mapping[str, str], manager: bool) -> threading.Thread | None:
    """Start the watch if a local launcher started this rank; `manager`: this is rank 0."""
    text = environ.get(LAUNCHER_VAR)
    if text is None:
        return None
    launcher = ProcessIdentity.parse(text)
    here = identity_of(os.getpid())
    if launcher is None or here is None or here.boot != launcher.boot:
        # a variable that travelled to another host (or a damaged one): no launcher of ours to watch
        log.warning("ignoring %s=%r: it names no process of this host", LAUNCHER_VAR, text)
        return None
    if manager and signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        # a launcher started in the background of a script passes SIGINT on ignored: rank 0's
        # orderly stop (below) is an interrupt, so it must arrive
        signal.signal(signal.SIGINT, signal.default_int_handler)
    watch = threading.Thread(target=_watch, args=(launcher, manager), name="launcher-lifeline", daemon=True)
    watch.start()
    return watch


def _watch(launcher: ProcessIdentity, manager: bool) -> None:
    fd = _pidfd_if_alive(launcher)
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
        os.close(fd)
    _launcher_gone(launcher, manager)


def _pidfd_if_alive(launcher: ProcessIdentity) -> int | None:
    """A pidfd of the launcher, or None if it has already ended. The identity is checked after the
    pidfd is opened: if the pid still names the launcher then, the pidfd names it too."""
    try:
        fd = os.pidfd_open(launcher.pid)
    except ProcessLookupError:
        return None
    if identity_of(launcher.pid) != launcher:
        os.close(fd)
        return None
    return fd


def _launcher_gone(launcher: ProcessIdentity, manager: bool) -> None:
    if manager:
        _say(f"error: the launcher (`onepiece run`, pid {launcher.pid}) ended; rank 0 closes the output and "
             "stops every rank; finished items are kept; run the same command again to resume")
        sys.excepthook = _leave_at_once
        os.kill(os.getpid(), signal.SIGINT)  # the main thread stops as on Ctrl-C: the writer closes in order
        time.sleep(CLOSE_DEADLINE_S)
        _say(f"error: rank 0 did not close within {CLOSE_DEADLINE_S:.0f} s of its launcher's end; leaving now")
    else:
        time.sleep(STAGE_GRACE_S)  # rank 0's abort ends this rank long before, unless rank 0 is gone too
    os._exit(ExitCode.FAILED)


def _leave_at_once(kind, error, trace) -> None:
    """An interrupt that no orderly stop caught (rank 0 was still starting, no output open) ends the
    process at once: leaving through MPI_Finalize would wait for ranks that are about to wait for it."""
    if issubclass(kind, KeyboardInterrupt):
        os._exit(after_signal(signal.SIGINT))
    sys.__excepthook__(kind, error, trace)
    os._exit(ExitCode.FAILED)


def _say(line: str) -> None:
    """One line to stderr, which may be a closed terminal by now."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass

