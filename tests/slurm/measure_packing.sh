#!/usr/bin/env bash
# Measure how packing changes a sweep of many short trials on Slurm: wall time, sbatch submissions and Slurm
# job records, for the same N trials run
#   unpacked   one Slurm job per trial
#   array      one Slurm job array for all ready trials (--slurm-array-jobs), one array task per trial
#   grouped    profiles/slurm as it is: `group-components` trials per Slurm job
# The trials are tests/slurm/packing/Snakefile (rule trial_stage1, `sleep` seconds each), run with the real
# profiles/slurm, on the cluster of tests/slurm/cluster.sh (which must be running).
#
#   tests/slurm/measure_packing.sh [TRIALS [SLEEP_S [MODES...]]]     defaults: 60 2 unpacked array grouped
#
# Environment: METATUNE_GPUS (1: every trial asks for a GPU, as real training does; 0: CPU only),
# METATUNE_SLURM_ACCOUNT (default metatune, the test cluster's account), STATUS_S (the plugin's seconds
# before its first status check and after each finished job; default 5, the profile's Euler value is 40).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
trials=${1:-60}
sleep_s=${2:-2}
shift $(($# > 2 ? 2 : $#))
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(unpacked array grouped)
export METATUNE_SLURM_ACCOUNT=${METATUNE_SLURM_ACCOUNT:-metatune}
export METATUNE_GPUS=${METATUNE_GPUS:-1}
status_s=${STATUS_S:-5}

# run_mode MODE: run the benchmark once in a fresh directory; print one result line.
run_mode() {
    local mode=$1 work extra=() t0 t1 run_id submissions records
    work=$(mktemp -d /tmp/metatune-packing-XXXXXX)
    cp "$here/packing/Snakefile" "$work/"
    case $mode in
        # `--groups` on the command line replaces the profile's whole `groups:` key; a group for a rule
        # that does not exist switches grouping off and leaves everything else in the profile as it is.
        unpacked) extra=(--groups no_such_rule=none) ;;
        array) extra=(--groups no_such_rule=none --slurm-array-jobs trial_stage1) ;;
        grouped) extra=() ;;
        *) echo "unknown mode $mode" >&2; return 2 ;;
    esac
    t0=$(date +%s.%N)
    # Hard timeout: the executor plugin can wait forever on a job that Slurm lost.
    if ! (cd "$work" && timeout -k 10 1500 snakemake --profile "$repo/profiles/slurm" \
        --slurm-init-seconds-before-status-checks "$status_s" --slurm-keep-successful-logs \
        --config trials="$trials" sleep="$sleep_s" "${extra[@]}" >"$work/snakemake.log" 2>&1); then
        echo "$mode: snakemake failed, see $work/snakemake.log" >&2
        return 1
    fi
    t1=$(date +%s.%N)
    run_id=$(sed -n 's/.*SLURM run ID: //p' "$work/snakemake.log" | head -1)
    # sbatch calls: one line per submitted job or array in the log.
    submissions=$(grep -cE "has been submitted with SLURM jobid|Submitted array job" "$work/snakemake.log")
    # Job records: every allocation Slurm scheduled (array tasks count one each).
    records=$(sacct -X -n -P --name "$run_id" -S now-2hours -o JobID | sort -u | wc -l)
    printf '%-9s trials=%d sleep=%ss gpus=%s wall=%.0fs sbatch_calls=%d slurm_jobs=%d\n' \
        "$mode" "$trials" "$sleep_s" "$METATUNE_GPUS" "$(echo "$t1 - $t0" | bc)" "$submissions" "$records"
    rm -rf "$work"
}

for mode in "${modes[@]}"; do
    run_mode "$mode"
done
