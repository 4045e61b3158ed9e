#!/bin/bash
# fuzz_run.sh FUZZER SEED_DIR WORK_DIR SECONDS MIN_EXECS
# Runs a fuzz target (libFuzzer, or tests/fuzz_main.c's stand-in driver) for SECONDS,
# seeded from SEED_DIR (read only; new inputs go to WORK_DIR/corpus), and fails when it
# crashed, a checked property failed, or it ran fewer than MIN_EXECS inputs (a fuzzer
# that barely ran proves nothing). Crashing inputs are kept in WORK_DIR/artifacts/.
set -u
if [ $# -ne 5 ]; then
  echo "usage: fuzz_run.sh FUZZER SEED_DIR WORK_DIR SECONDS MIN_EXECS" >&2
  exit 2
fi
fuzzer=$1 seeds=$2 work=$3 secs=$4 min=$5
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
log=$work/fuzz.log
"$fuzzer" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" >"$log" 2>&1
rc=$?
tail -n 25 "$log"
if [ $rc -ne 0 ]; then
  echo "FAIL: $(basename "$fuzzer") exited with $rc (a crash or a failed property; inputs in $work/artifacts)"
  exit 1
fi
# libFuzzer prints both lines at the end; the stand-in driver prints them too.
n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*$')
if [ -z "$n" ]; then
  n=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | grep -o '[0-9][0-9]*')
fi
if [ -z "$n" ]; then
  echo "FAIL: no execution count in the fuzzer's output"
  exit 1
fi
echo "$(basename "$fuzzer"): $n executions in $secs s (about $((n / secs))/s; at least $min required)"
if [ "$n" -lt "$min" ]; then
  echo "FAIL: only $n executions (at least $min required)"
  exit 1
fi
exit 0
