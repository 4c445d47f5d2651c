#!/usr/bin/env bash
# Sets up, then runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The store's fault tests kill a run at each of its writes with strace's syscall injection; the
# metrics tests scrape with a real Prometheus; the report tests open the report in Chromium.
missing=()
command -v strace >/dev/null || missing+=(strace)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PWD/.venv/bin:$PATH"
# Two workers side by side: most tests wait on ranks, Slurm and timers more than they compute, so
# two cores take the suite in about half the time. A cluster's tests stay in one worker
# (tests/slurm/conftest.py). `-n 0` (after these) runs it in one process.
exec python -m pytest -n 2 --dist loadgroup --durations=30 "$@"
