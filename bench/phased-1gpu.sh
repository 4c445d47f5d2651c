#!/usr/bin/env bash
# One GPU under a memory cap (issue 17, point 4): the plain loop resident, with model offload and
# with group offloading, against our stages run in phases; one process a mode, each a JSON line.
#   bash bench/phased-1gpu.sh RESULTS JOB CAP_GIB PHASE "MODE:ITEMS ..." [DEADLINE=s]
# MODE `resident` runs with no cap; `capped-resident` is the same plain call under the cap (it
# runs only where the whole pipeline fits).
set -u
results=$(mkdir -p "$1" && cd "$1" && pwd)
job=$2 cap=$3 phase=$4 modes=$5 deadline=${6#DEADLINE=}
deadline=${deadline:-570}
name=$(basename "$job" .yaml)
echo "$(date -u +%FT%T) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $job cap ${cap} GiB phase $phase"
for step in $modes; do
    mode=${step%:*} items=${step#*:}
    left=$((deadline - SECONDS))
    if (( left < 60 )); then echo "skip $mode: ${left} s left"; continue; fi
    cap_arg=(--gpu-memory-gib "$cap"); [[ $mode == resident ]] && cap_arg=()
    label=$mode; [[ $mode == capped-resident ]] && mode=resident
    echo "$(date -u +%T) start $label ($items items)"
    timeout "$left" python3 -m onepiece_hpc.bench.phased "$job" --mode "$mode" --items "$items" --phase "$phase" \
        "${cap_arg[@]}" --json "$results/$name-$label.json" >>"$results/$name.log" 2>&1
    echo "$(date -u +%T) end $label: exit $? at ${SECONDS} s"
done
cat "$results"/"$name"-*.json 2>/dev/null
