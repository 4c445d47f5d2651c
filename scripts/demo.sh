#!/usr/bin/env bash
# Sets up, then runs the built-in tiny job end to end: generate, inspect, export PNGs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
onepiece run jobs/tiny.yaml --monolithic
onepiece inspect jobs/out/tiny-demo.h5
rm -rf jobs/out/tiny-demo-png
onepiece export jobs/out/tiny-demo.h5 jobs/out/tiny-demo-png
