#!/usr/bin/env bash
# One GPU under a memory cap (issue 17, point 4): the plain loop resident, under the cap, with
# model offload and with group offloading, against our stages run in phases; one process a mode
# (`onepiece bench phased`), each a JSON record under RESULTS.
#   bash bench/phased-1gpu.sh RESULTS JOB CAP_GIB PHASE "MODE:ITEMS ..." [DEADLINE=s] [WARM=steps] [COMPARE=record.json ...]
# MODE `resident` runs with no cap; `capped-resident` is the same plain call under the cap (it
# runs only where the whole pipeline fits). DEADLINE bounds each mode; WARM sets the denoising
# steps of the unit each mode runs off the clock (--warm-steps); COMPARE puts a record kept by an
# earlier call in the table (--compare), for modes too long to share a call.
set -u
results=$1 job=$2 cap=$3 phase=$4 modes=$5
shift 5
deadline=570 warm=() compare=()
for setting in "$@"; do
    case "$setting" in
        DEADLINE=*) deadline=${setting#DEADLINE=} ;;
        WARM=*) warm=(--warm-steps "${setting#WARM=}") ;;
        COMPARE=*) compare+=(--compare "${setting#COMPARE=}") ;;
        *) echo "unknown setting $setting (DEADLINE=s, WARM=steps or COMPARE=record.json)" >&2; exit 2 ;;
    esac
done
echo "$(date -u +%FT%T) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $job cap ${cap} GiB phase $phase"
python3 -m onepiece_hpc.cli.main bench phased "$job" --modes "$modes" --gpu-memory-gib "$cap" --phase "$phase" \
    --results "$results" --timeout "$deadline" "${warm[@]}" "${compare[@]}"
