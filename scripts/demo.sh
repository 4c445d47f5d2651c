#!/usr/bin/env bash
# Sets up, then shows the product on the built-in tiny model: a staged run on 5 local ranks
# whose load shifts midway (the Node Manager moves ranks to follow it), then inspect, export
# and the report. Everything lands in jobs/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
rm -rf jobs/out/demo.h5 jobs/out/demo.h5.d jobs/out/demo-png   # a fresh run each time (a rerun would resume)
onepiece run jobs/demo.yaml -n 5
onepiece inspect jobs/out/demo.h5
onepiece export jobs/out/demo.h5 jobs/out/demo-png
onepiece report jobs/out/demo.h5     # jobs/out/demo.report.html: open it in any browser, no network needed
