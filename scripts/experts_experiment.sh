#!/usr/bin/env bash
# experts_experiment.sh: the multi-task nano model with and without the modality-expert
# FFN (model.modality_experts), same tasks, same batches, same steps.
#
#   scripts/experts_experiment.sh [--epochs E] [--max-rows R] [--seed N] [--out DIR]
#                                 [--tasks "caption vqa_gen ..."] [--bin DIR]
#
# Both plans are cut out of configs/multitask.conf (its header says how) with the chosen
# tasks, epochs, max_rows and seed; they differ only in model.modality_experts. Each is
# run with BIN/launch; the script prints one row per task (the metric of both models,
# their ratio experts/plain, the constant baseline) and the parameters, steps and wall
# time of each. The default (seven tasks, four of them over images, 600 round-robin
# steps) took about 4.5 minutes a model on 2 loaded CPU cores. Not in CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EPOCHS=6
MAX_ROWS=1600
SEED=1
OUT=""
TASKS="caption vqa_gen refcoco image_classify snli_ve glue dart"
BIN="$ROOT/build/bin"
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) EPOCHS="$2"; shift 2 ;;
        --max-rows) MAX_ROWS="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --tasks) TASKS="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "experts_experiment.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || OUT="$ROOT/runs/experts_experiment-$(date -u +%Y%m%d-%H%M%S)"
if [ ! -x "$BIN/launch" ]; then
    echo "experts_experiment.sh: $BIN/launch not found" >&2
    echo "---> HINT: build the project first, or pass --bin BUILD/bin" >&2
    exit 1
fi
PY=/usr/bin/python3
mkdir -p "$OUT/plans"

"$PY" - "$ROOT/configs/multitask.conf" "$OUT/plans" "$EPOCHS" "$MAX_ROWS" "$ROOT" "$TASKS" \
    "$SEED" <<'EOF'
import re, sys
src, outdir, epochs, max_rows, root, want, seed = sys.argv[1:8]
sys.path.insert(0, root + "/scripts/data")
from mtplans import pick, set_budget, task_blocks
head, tail, names, blocks = task_blocks(open(src).read(), src)
keep = [b for _, b in pick(names, blocks, want, src)]
head = re.sub(r'^data_dir = "[^"]*";', 'data_dir = "%s";' % root, head, flags=re.M)
head = re.sub(r'^seed = \d+;', 'seed = %s;' % seed, head, flags=re.M)
if not re.search(r"^model = \{\n", tail, re.M):
    sys.exit("%s: no 'model = {' block" % src)
for name, on in (("plain", "false"), ("experts", "true")):
    h = re.sub(r'^name = "[^"]*";', 'name = "%s";' % name, head, flags=re.M)
    t = re.sub(r"^model = \{\n", "model = {\n  modality_experts = %s;\n" % on, tail, flags=re.M)
    open("%s/%s.conf" % (outdir, name), "w").write(
        h + "tasks = (\n" + ",\n".join(set_budget(b, epochs, max_rows) for b in keep) + "\n);\n" + t)
EOF

for ds in $(grep -ho 'dataset = "[^"]*"' "$OUT/plans/plain.conf" | cut -d'"' -f2 | sort -u); do
    [ -f "$ROOT/data/$ds/train.tsv" ] || "$BIN/launch" data "$ds" --out "$ROOT/data"
done

: > "$OUT/seconds.txt"
for p in plain experts; do
    t0=$(date +%s)
    if ! "$BIN/launch" --run-dir "$OUT/runs/$p" "$OUT/plans/$p.conf" > "$OUT/$p.log" 2>&1; then
        echo "experts_experiment.sh: plan $p failed; see $OUT/$p.log" >&2
        exit 1
    fi
    t1=$(date +%s)
    echo "$p $((t1 - t0))" >> "$OUT/seconds.txt"
    echo "trained $p in $((t1 - t0)) s"
done

OFA_MTPLANS_DIR="$ROOT/scripts/data" "$PY" - "$OUT" <<'EOF' | tee "$OUT/table.md"
import json, os, sys
sys.path.insert(0, os.environ["OFA_MTPLANS_DIR"])
import mtplans
out = sys.argv[1]

def params(run):
    return mtplans.params(os.path.join(out, "runs", run))

def steps(run):
    return mtplans.steps(os.path.join(out, "runs", run))

ev = {r: json.load(open(os.path.join(out, "runs", r, "eval.json"))) for r in ("plain", "experts")}
secs = dict(l.split() for l in open(os.path.join(out, "seconds.txt")))
fmt = lambda v: "-" if v is None else "%.4g" % v
print("| task | metric | plain FFN | modality experts | ratio experts/plain | baseline | n |")
print("|---|---|---|---|---|---|---|")
for t in ev["plain"]:
    p, e = ev["plain"][t], ev["experts"].get(t, {})
    pv, xv = p.get("value"), e.get("value")
    ratio = "%.2f" % (xv / pv) if pv and xv is not None else "-"
    print("| %s | %s | %s | %s | %s | %s | %s |" % (t, p.get("metric"), fmt(pv), fmt(xv), ratio,
                                                  fmt(p.get("baseline")), p.get("n")))
print()
for r in ("plain", "experts"):
    print("%s: %s parameters, %d optimizer steps, %s s wall time." % (r, params(r), steps(r), secs.get(r)))
EOF
echo "table: $OUT/table.md"
