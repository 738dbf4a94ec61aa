#!/usr/bin/env bash
# Run every benchmark of bench/ in sequence at its default size, then list the ratio lines.
#
#   bench/run_all.sh                       (after `scripts/run setup`: uses .venv/bin/python)
#   bench/run_all.sh generator end_to_end  (only these benches)
#   PYTHON=/path/python bench/run_all.sh
#
# Each bench prints its table and ends with one ratio line; the whole output is kept in
# bench/results/run_all-<UTC time>.log. A failing bench does not stop the others; the exit
# code is non-zero when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BENCHES=(generator avro_encode bytes_read first_alert end_to_end publish consumer consumer_memory crossmatch)
if [ "$#" -gt 0 ]; then BENCHES=("$@"); fi
mkdir -p bench/results
LOG="bench/results/run_all-$(date -u +%Y%m%dT%H%M%SZ).log"
declare -a SUMMARY=()
failed=0
for name in "${BENCHES[@]}"; do
  script="bench/$name.py"
  echo "=== $script ($(date -u +%H:%M:%S) UTC)" | tee -a "$LOG"
  if [ ! -f "$script" ]; then
    echo "missing $script" | tee -a "$LOG"; SUMMARY+=("$name: MISSING"); failed=1; continue
  fi
  start=$(date +%s)
  # Spark, Kafka and Dagster write progress to stderr: keep it in the log, not on the terminal
  out=$(mktemp)
  "$PYTHON" "$script" 2>>"$LOG" | tee -a "$LOG" "$out"
  rc=${PIPESTATUS[0]}
  seconds=$(( $(date +%s) - start ))
  if [ "$rc" -ne 0 ]; then
    echo "$script failed (exit $rc); see $LOG" | tee -a "$LOG"; SUMMARY+=("$name: FAILED (exit $rc)"); failed=1
  else
    SUMMARY+=("$name (${seconds} s): $(grep -v '^[[:space:]]*$' "$out" | tail -n 1)")
  fi
  rm -f "$out"
done
echo | tee -a "$LOG"
echo "=== ratio lines" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
echo "full output: $LOG"
exit "$failed"
