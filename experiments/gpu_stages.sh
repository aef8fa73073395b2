# Sourced by the one-shot CUDA-machine scripts (experiments/gpu_speed.sh, experiments/gpu_surrogate_all.sh): say
# prints a line stamped with the seconds since sourcing; stage NAME SECONDS CMD... runs a command with its output in
# OUT/NAME.log, interrupted after SECONDS, and logs its exit status and last lines. Needs OUT set.
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start ))s] $*"; }
stage() {
    local name=$1 limit=$2; shift 2
    say "start $name (limit ${limit}s)"
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    say "end $name rc=$?"; tail -n 3 "$OUT/$name.log" | sed "s/^/    $name| /"
}
