#!/usr/bin/env bash
# `onepiece bench transport` across a host boundary, on the local multi-host Slurm (needs root):
# two hosts of their own (slurm/local-cluster.sh up --hosts 2), one rank on each, ring/mpi-rma
# against mpi4py Send/Recv over the link between them; then both ranks on one host (ring/shm
# joins), in the same run, for comparison. 64 KiB to 64 MiB.
#
#   sudo bench/transport-hosts.sh [RESULT.txt]      # default: bench/results/<UTC time>-transport-hosts.txt
set -euo pipefail
cd "$(dirname "$0")/.."
result="${1:-bench/results/$(date -u +%Y%m%dT%H%M)-transport-hosts.txt}"
sizes="${SIZES:-64K,256K,1M,4M,16M,64M}"
python="$PWD/.venv/bin/python"

ONEPIECE_SLURM_DIR="$(mktemp -d "${TMPDIR:-/tmp}/onepiece-bench-hosts.XXXXXXXX")"
export ONEPIECE_SLURM_DIR ONEPIECE_SLURM_PORTS="${ONEPIECE_SLURM_PORTS:-17017}"
trap 'bash slurm/local-cluster.sh down >/dev/null 2>&1 || true; rm -rf "$ONEPIECE_SLURM_DIR"' EXIT
bash slurm/local-cluster.sh up --hosts 2 --share "$PWD"
export SLURM_CONF="$ONEPIECE_SLURM_DIR/slurm.conf"

measure() {  # measure TITLE SBATCH-OPTIONS...: the benchmark as one job, its table to stdout
    local title=$1 log
    shift
    log="$ONEPIECE_SLURM_DIR/bench-$RANDOM.log"
    sbatch --wait --quiet "$@" -o "$log" --wrap \
        "srun --mpi=pmi2 $python -m onepiece_hpc.cli.main bench transport --sizes $sizes" >/dev/null
    echo "## $title"
    echo
    grep -v '^measuring' "$log"
    echo
}

{
    echo "# onepiece bench transport across hosts: sudo bench/transport-hosts.sh ($(date -u +%FT%TZ))"
    echo
    echo "Two hosts of the local multi-host Slurm (network namespaces on one machine, a veth pair"
    echo "and a bridge between them: the link is the kernel's, not a NIC). $(nproc) cores."
    echo
    measure "two hosts (h1, h2), one rank each" -N 2 -n 2 --ntasks-per-node=1
    measure "one host, two ranks (same run)" -N 1 -n 2 -w h1
} | tee "$result"
echo "wrote $result" >&2
