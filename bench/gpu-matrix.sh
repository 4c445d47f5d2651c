#!/usr/bin/env bash
# The GPU benchmark matrix on one node of four GPUs, as it ran for the records in bench/results/:
# two lanes of two GPUs side by side (disjoint GPUs; they share the host's CPUs and memory), then
# the four-GPU runs one after another, most telling first. Each step's log and each bench's JSON
# record land in RESULTS as they finish, so a matrix cut short keeps what it ran.
#   bash bench/gpu-matrix.sh [RESULTS]
set -u
results=${1:-bench/results}
mkdir -p "$results"
stamp=$(date -u +%Y%m%dT%H%M)

onepiece() { python3 -m onepiece_hpc.cli.main "$@"; }

step() {  # step NAME COMMAND...: run COMMAND, its output to RESULTS/STAMP-NAME.log
    local name=$1 rc
    shift
    echo "$(date -u +%T) start $name"
    "$@" >"$results/$stamp-$name.log" 2>&1
    rc=$?
    echo "$(date -u +%T) end $name: exit $rc"
}

bench() { onepiece bench pipeline "$@" --device cuda --results "$results"; }

lane_a() {
    export CUDA_VISIBLE_DEVICES=0,1
    step transport-cuda-2gpu onepiece bench transport --device cuda --sizes 1M,16M,64M --trials 2
    step gpu-smoke-2gpu python3 tests/gpu/smoke.py --quick
    step sdxl-1024-2gpu bench jobs/gpu/sdxl-1024.yaml --gpus 2 --items 48 --batches 1,2,4
}

lane_b() {
    export CUDA_VISIBLE_DEVICES=2,3
    step wan-1.3b-50step-2gpu bench jobs/gpu/wan-1.3b-50step.yaml --gpus 2 --items 4 --batches 1 --repeats 1
}

lane_a &
lane_b &
wait
step wan-14b-40gib-4gpu bench jobs/gpu/wan-14b-40gib.yaml --gpus 4 --items 12 --batches 1 \
    --gpu-memory-gib 40 --offload encode
step wan-1.3b-4step-4gpu bench jobs/gpu/wan-1.3b-4step.yaml --gpus 4 --items 32 --batches 1
step sdxl-1024-4gpu bench jobs/gpu/sdxl-1024.yaml --gpus 4 --items 96 --batches 1,2,4
echo "$(date -u +%T) matrix done"
