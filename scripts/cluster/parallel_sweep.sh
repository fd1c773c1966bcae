#!/usr/bin/env bash
# A benign sweep split into SHARDS shards run side by side with GNU parallel, then merged: the
# recipe for a workstation or a few hosts without a batch scheduler (add parallel's
# --sshloginfile to spread the shards over hosts that share the output folder).
#
#   SHARDS=8 JOBS=4 scripts/cluster/parallel_sweep.sh --out sweeps/fig5 \
#       --grid d=250:5000:125 --grid signal_norm=5:100:2.5
#
# Every shard appends to its own results file, so a killed shard resumes when the same command
# is run again; the merge then writes OUT/merged. Without GNU parallel the shards run through
# `xargs -P`, which does the same on one host.
#
# Environment: BENIGN (default `benign` on PATH), SHARDS (default 4), JOBS (shards at once,
# default SHARDS), THREADS (threads per shard, default 1).
set -euo pipefail

BENIGN="${BENIGN:-benign}"
SHARDS="${SHARDS:-4}"
JOBS="${JOBS:-$SHARDS}"
THREADS="${THREADS:-1}"
out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --out) out="${args[i + 1]:-}" ;;
        --out=*) out="${args[i]#--out=}" ;;
    esac
done
if [ -z "$out" ]; then
    echo "parallel_sweep.sh: give the sweep's --out DIR" >&2
    exit 2
fi

status=0
if command -v parallel >/dev/null; then
    seq 0 $((SHARDS - 1)) | parallel --will-cite --halt never -j "$JOBS" \
        "$BENIGN" sweep --shard {}/"$SHARDS" --threads "$THREADS" --no-plot "${args[@]}" || status=$?
else
    seq 0 $((SHARDS - 1)) | xargs -P "$JOBS" -I{} \
        "$BENIGN" sweep --shard {}/"$SHARDS" --threads "$THREADS" --no-plot "${args[@]}" || status=$?
fi
# Merge whatever finished; the merge names the runs (and shards) still missing.
"$BENIGN" sweep merge "$out" --out "$out/merged" || status=$?
exit "$status"
