#!/usr/bin/env bash
# CPU training throughput of our model against PyTorch's, in one run (the machines are
# noisy: only the ratio within one run means anything).
# Usage: bench/bench_model_cpu.sh [BUILD_DIR] [THREADS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
threads=${2:-2}
bin=$build/bin/bench_model_cpu
[ -x "$bin" ] || { echo "bench_model_cpu: $bin not built (ninja -C $build bench_model_cpu)" >&2; exit 1; }
torch_py=${OFA_SHARED_DIR:-$here/../../shared}/bench/torch_encdec_cpu.py
ours=$("$bin" "$threads")
theirs=$(/usr/bin/python3 "$torch_py" "$threads")
echo "$ours"
echo "$theirs"
for size in nano tiny; do
  a=$(echo "$ours" | awk -v s=$size '$3==s {sub("samples/s=","",$NF); print $NF}')
  b=$(echo "$theirs" | awk -v s=$size '$3==s {sub("samples/s=","",$NF); print $NF}')
  [ -n "$a" ] && [ -n "$b" ] && awk -v s=$size -v a="$a" -v b="$b" \
    'BEGIN { printf "ratio %-5s ofa/torch = %.2f (%.1f vs %.1f samples/s)\n", s, a/b, a, b }'
done
