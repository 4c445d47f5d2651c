#!/usr/bin/env bash
# Prepares .venv on a fresh Debian machine: Python venv, torch (CPU build where none is
# installed), this package with its test extras and a pip-installed MPI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Python 3.11 or newer is needed (found: $(python3 --version 2>&1))" >&2
    exit 2
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    else
        echo "setup: python3-venv is missing; install it (apt-get install python3-venv)" >&2
        exit 2
    fi
fi

# A venv that sees no other site packages, unless the interpreter has a torch of its own (a CUDA
# build, say) for the venv to use: each process that imports diffusers reads the metadata of every
# package on its path (its optional-package checks) and imports scipy where it sees scipy, and the
# suite starts hundreds of such ranks; in a plain venv each starts about 1.2 CPU-seconds sooner.
if [ ! -x .venv/bin/python ]; then
    if python3 -c 'import torch' 2>/dev/null; then
        python3 -m venv --system-site-packages .venv
    else
        python3 -m venv .venv
    fi
fi
py=.venv/bin/python
# RDMA verbs: the system's rdma-core bindings (Debian's python3-pyverbs), where installed, are linked in
if ! $py -c 'import pyverbs' 2>/dev/null && [ -x /usr/bin/python3 ] \
        && verbs="$(/usr/bin/python3 -c 'import os, pyverbs; print(os.path.dirname(pyverbs.__file__))' 2>/dev/null)"; then
    ln -sfn "$verbs" "$($py -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/pyverbs"
fi
$py -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# The CPU build of torch first: the package's torch range then pulls nothing more.
$py -c 'import torch' 2>/dev/null || $py -m pip install -q torch==2.13.0
$py -m pip install -q -e '.[test,local-mpi]'
