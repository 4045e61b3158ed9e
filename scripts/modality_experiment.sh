#!/usr/bin/env bash
# modality_experiment.sh: the per-modality plans, each trained in full and judged against
# the best constant output of the same run (eval.json's baseline), as docs/modalities.md
# reports them.
#
#   scripts/modality_experiment.sh [--bin DIR] [--out DIR] [--data DIR] [PLAN...]
#
# PLAN defaults to: text_to_phone asr video_caption motion_label (configs/PLAN.conf).
# Each plan's dataset is built into --data (default: data/, idempotent), the plan is run
# as written except for data_dir, and OUT/table.md gets one row per plan: metric, value,
# baseline, steps, training examples, wall time. Exits non-zero when a run fails or a
# plan does not beat its baseline by a clear margin: a higher-is-better metric at least
# 1.5x the baseline, WER/CER at most 0.7x the baseline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/bin
out=$root/runs/modality_experiment
data=$root/data
plans=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "modality_experiment.sh: unknown option $1" >&2; exit 2 ;;
    *) plans+=("$1"); shift ;;
  esac
done
[ ${#plans[@]} -gt 0 ] || plans=(text_to_phone asr video_caption motion_label)
[ -x "$bin/launch" ] || { echo "modality_experiment.sh: no $bin/launch (build first, or --bin)" >&2; exit 2; }
mkdir -p "$out" "$data"
data=$(cd "$data" && pwd)

for p in "${plans[@]}"; do
  conf=$root/configs/$p.conf
  [ -f "$conf" ] || { echo "modality_experiment.sh: no $conf" >&2; exit 2; }
  ds=$(sed -n 's/^ *dataset = "\([^"]*\)";.*/\1/p' "$conf" | head -1)
  /usr/bin/python3 "$root/scripts/build_data.py" "$ds" --out "$data"
  sed "s|^data_dir = .*|data_dir = \"$data\";|" "$conf" > "$out/$p.conf"
  rm -rf "$out/$p"
  t0=$(date +%s.%N)
  "$bin/launch" --run-dir "$out/$p" "$out/$p.conf" > "$out/$p.log" 2>&1 || {
    echo "modality_experiment.sh: $p failed; see $out/$p.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t0 $t1" > "$out/$p/wall"
done

/usr/bin/python3 - "$out" "${plans[@]}" <<'PY'
import json, os, sys
out, plans = sys.argv[1], sys.argv[2:]
rows, bad = [], []
for p in plans:
    rd = os.path.join(out, p)
    ev = json.load(open(os.path.join(rd, "eval.json")))
    summ = json.load(open(os.path.join(rd, "summary.json")))["total"]
    t0, t1 = map(float, open(os.path.join(rd, "wall")).read().split())
    steps = 0
    for line in open(os.path.join(rd, "metrics.jsonl")):
        steps = max(steps, json.loads(line)["step"])
    for task, e in ev.items():
        lower = e["metric"] in ("wer", "cer")
        ok = e["value"] <= 0.7 * e["baseline"] if lower else e["value"] >= 1.5 * e["baseline"]
        if not ok:
            bad.append(task)
        rows.append("| %s | %s | %s | %.3f | %.3f (%s) | %d | %d | %.0f s | %s |" % (
            p, task, e["metric"], e["value"], e["baseline"], e.get("baseline_kind", ""),
            steps, summ["delivered"], t1 - t0, "yes" if ok else "NO"))
table = ("| plan | task | metric | value | best constant | steps | rows delivered | wall | clear margin |\n"
         "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
open(os.path.join(out, "table.md"), "w").write(table)
print(table)
if bad:
    print("modality_experiment.sh: no clear margin over the baseline: " + ", ".join(bad))
    sys.exit(1)
PY
