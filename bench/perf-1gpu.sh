#!/usr/bin/env bash
# One-GPU runs of issue 17, as they ran for the records in bench/results/: where the stage
# runners and data-parallel lose against the plain diffusers loop (stage traces), and the bench
# against the plain loop on Wan2.1-1.3B (4 steps, 480x832x81, 4 videos) and SDXL (1024 px,
# 30 steps with guidance, 8 images at batch 4). A step runs in this checkout, or in another one named after
# an @ (an older checkout, for a before/after pair in one call); a step that would run past
# DEADLINE seconds from the start (default 570) is skipped.
#   bash bench/perf-1gpu.sh RESULTS STEP[@CHECKOUT]... [DEADLINE=s]
#   steps: trace-wan trace-sdxl bench-wan bench-sdxl
set -u
results=$(mkdir -p "$1" && cd "$1" && pwd)
shift
deadline=570
steps=()
for arg in "$@"; do
    case $arg in
        DEADLINE=*) deadline=${arg#DEADLINE=} ;;
        *) steps+=("$arg") ;;
    esac
done
py() { (cd "$tree" && PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" python3 "$@"); }
# stage_trace moved from runtime/ to bench/; a checkout from before the move has it in runtime/
trace() { local where=bench; [[ -e $tree/onepiece_hpc/bench/stage_trace.py ]] || where=runtime
          py -m "onepiece_hpc.$where.stage_trace" "$@"; }

declare -A needs=([trace-wan]=105 [trace-sdxl]=200 [bench-wan]=210 [bench-sdxl]=175)  # seconds a step took on an H200
run_step() {
    local name=${1%@*} tree=$PWD label
    [[ $1 == *@* ]] && tree=$(cd "${1#*@}" && pwd)
    label=$(basename "$tree")
    label=${label#.}
    if (( SECONDS + ${needs[$name]} > deadline )); then
        echo "$(date -u +%T) skip $name ($label): ${needs[$name]} s would pass the ${deadline} s deadline"
        return
    fi
    echo "$(date -u +%T) start $name ($label)"
    case $name in
        trace-wan) trace jobs/gpu/wan-1.3b-4step.yaml --batch 1 \
                       --ops "$results/trace-wan.txt" >"$results/trace-wan.json" 2>>"$results/trace.log" ;;
        trace-sdxl) trace jobs/gpu/sdxl-1024.yaml --batch 4 \
                        --ops "$results/trace-sdxl.txt" >"$results/trace-sdxl.json" 2>>"$results/trace.log" ;;
        bench-wan) py -m onepiece_hpc.cli.main bench pipeline jobs/gpu/wan-1.3b-4step.yaml --device cuda --gpus 1 \
                       --items 4 --batches 1 --repeats 1 --policies static --results "$results/$label" \
                       >>"$results/bench.log" 2>&1 ;;
        bench-sdxl) py -m onepiece_hpc.cli.main bench pipeline jobs/gpu/sdxl-1024.yaml --device cuda --gpus 1 \
                        --items 8 --batches 4 --repeats 1 --policies static --results "$results/$label" \
                        >>"$results/bench.log" 2>&1 ;;
        *) echo "unknown step $name"; return ;;
    esac
    echo "$(date -u +%T) end $name ($label): exit $? after ${SECONDS} s"
}

echo "$(date -u +%FT%T) $(nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv,noheader)"
for name in "${steps[@]}"; do
    run_step "$name"
done
