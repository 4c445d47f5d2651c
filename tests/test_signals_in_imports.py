"""A stop signal lands where its exception can take effect.

1. One that lands while a module is being imported waits for the import to finish.

Raised inside an import, the stop's exception can cross C++ (torch's pybind11 modules run Python
while they initialise), and C++ then aborts the process with SIGABRT: a drain during a one-task
run's start-up ended with -6 instead of exit 5. Each handler that raises now sends its signal
again shortly when it lands inside an import, so the stop is raised just after the import.

2. One whose exception is raised inside a finalizer or a weakref callback is sent again. Python
can't pass an exception on from there: it prints "Exception ignored in ..." and goes on. A drain
signal that landed in a weakref callback during a one-task run's start-up was lost that way (the
handler had already set the signal to be ignored), and the run went on to the end: exit 0, not 5.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support import REPO

PROGRAM = textwrap.dedent("""\
    import os, signal, sys, time
    from pathlib import Path
    from onepiece_hpc.runtime.interrupts import Terminated, interrupt_on_sigterm
    folder = Path(sys.argv[1])
    (folder / "slow_module.py").write_text(
        "import os, signal, time\\n"
        "os.kill(os.getpid(), signal.SIGTERM)\\n"
        "time.sleep(0.3)  # the signal's handler runs here, inside the import\\n"
        "FINISHED = True\\n")
    sys.path.insert(0, str(folder))
    interrupt_on_sigterm()
    try:
        import slow_module
        time.sleep(5)
        print("not stopped")
    except Terminated:
        print("stopped after the import:", "slow_module" in sys.modules and sys.modules["slow_module"].FINISHED)
    """)


def test_sigterm_during_an_import_stops_the_run_after_the_import(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped after the import: True", done.stdout + done.stderr


SWALLOWED = textwrap.dedent("""\
    import os, signal, sys, time, weakref
    from onepiece_hpc.runtime.interrupts import Terminated, interrupt_on_sigterm

    def stop_in_here(*_):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the signal's handler runs here, where Python swallows what it raises
            pass

    class Finalized:
        def __del__(self):
            stop_in_here()

    class Referent:
        pass

    interrupt_on_sigterm()
    try:
        if sys.argv[1] == "weakref callback":
            thing = Referent()
            ref = weakref.ref(thing, stop_in_here)
            del thing
        else:
            thing = Finalized()
            del thing
        print("the finalizer ran", flush=True)
        time.sleep(5)
        print("not stopped")
    except Terminated:
        print("stopped after it")
    """)


@pytest.mark.parametrize("where", ["weakref callback", "finalizer"])
def test_a_stop_raised_where_python_swallows_it_is_raised_again(where):
    done = subprocess.run([sys.executable, "-c", SWALLOWED, where], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["the finalizer ran", "stopped after it"], done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
