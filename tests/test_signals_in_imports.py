"""A stop signal that lands while a module is being imported waits for the import to finish.

Raised inside an import, the stop's exception can cross C++ (torch's pybind11 modules run Python
while they initialise), and C++ then aborts the process with SIGABRT: a drain during a one-task
run's start-up ended with -6 instead of exit 5. Each handler that raises now sends its signal
again shortly when it lands inside an import, so the stop is raised just after the import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
