#!/usr/bin/env bash
# Runs a command (default: scripts/setup.sh --install-only) and samples the machine every 2 s while it
# runs: compiler processes at once (cc1/cc1plus), their summed RSS, and the machine's used memory
# (MemTotal - MemAvailable). Prints the duration and the peaks, and writes them to docs/bench/setup.txt.
# For a fresh set-up: run it in a fresh clone with an empty cache,
#   IVRBOT_CACHE_DIR=$(mktemp -d) benchmarks/setup_watch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${SETUP_WATCH_OUT:-docs/bench/setup.txt}"
cmd=("$@"); ((${#cmd[@]})) || cmd=(scripts/setup.sh --install-only)
samples="$(mktemp)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
base_used_mb="$(awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print int((t - a) / 1024)}' /proc/meminfo)"
(
  while true; do
    procs=0; rss_kb=0
    for p in $(pgrep -x 'cc1plus|cc1' || true); do
      r="$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)"
      [[ -n "$r" ]] && { procs=$((procs + 1)); rss_kb=$((rss_kb + r)); }
    done
    used_mb="$(awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print int((t - a) / 1024)}' /proc/meminfo)"
    echo "$procs $((rss_kb / 1024)) $used_mb" >> "$samples"
    sleep 2
  done
) &
sampler=$!
start=$SECONDS
rc=0
"${cmd[@]}" || rc=$?
secs=$((SECONDS - start))
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
summary="$(awk -v base="$base_used_mb" '
  { if ($1 > mp) mp = $1; if ($2 > mr) mr = $2; if ($3 > mu) mu = $3; n++ }
  END { printf "compilers at once (max): %d\ncompiler RSS summed (max): %d MB\nmachine memory used (max): %d MB (%d MB before the run)\nsamples: %d every 2 s\n", mp, mr, mu, base, n }' "$samples")"
rm -f "$samples"
{
  echo "command: ${cmd[*]}  (exit $rc)"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(awk '/^MemTotal:/ {print int($2/1048576)}' /proc/meminfo) GiB, load average before: $load_before"
  echo "duration: $((secs / 60)) min $((secs % 60)) s"
  echo "$summary"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
exit "$rc"
