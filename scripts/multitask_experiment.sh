#!/usr/bin/env bash
# multitask_experiment.sh: one multi-task nano model against one single-task nano model
# per task, with the same training batches (and examples) per task.
#
#   scripts/multitask_experiment.sh [--epochs E] [--max-rows R] [--out DIR]
#                                   [--tasks "caption glue ..."] [--bin DIR]
#                                   [--reuse OLD_OUT] [--seed N]
#
# The plans are cut out of configs/multitask.conf (its header says how): the multi-task
# plan keeps the chosen tasks, each single-task plan keeps one; all get the same epochs
# and max_rows, so every task sees the same batches of the same size in both settings,
# and the models have the same shape. The plan's trainer.multitask applies to all: with
# round_robin (configs/multitask.conf) the multi-task model takes one optimizer step per
# round of one batch of every task, so it takes as many steps as each single-task model,
# and each of its steps holds N tasks' batches. It builds the datasets it needs (launch data), runs
# every plan with build/bin/launch, and prints one row per task: the metric of both
# models, their ratio (multi / single), the parameter ratio (the multi-task model serves
# N tasks with the parameters of one single-task model: 1/N per task), and the steps and
# examples each model trained on for that task (read back from each run's summary.json
# and eval.json: delivered rows less the validation rows).
# --reuse OLD_OUT takes a single-task run from an earlier experiment instead of training it
# again when its plan there is byte-identical to this one's (the runs are deterministic:
# same plan, same seed, same batches); the table says which runs were reused.
# CTest label `long` (not in CI): the default (ten tasks, 600 batches each) takes about
# 20 minutes on 2 CPU cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EPOCHS=6
SEED=""
MAX_ROWS=1600
OUT=""
TASKS=""
BIN="$ROOT/build/bin"
REUSE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --epochs) EPOCHS="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        --max-rows) MAX_ROWS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --tasks) TASKS="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --reuse) REUSE="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "multitask_experiment.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$OUT" ] || OUT="$ROOT/runs/multitask_experiment-$(date -u +%Y%m%d-%H%M%S)"
if [ ! -x "$BIN/launch" ]; then
    echo "multitask_experiment.sh: $BIN/launch not found" >&2
    echo "---> HINT: build the project first (cmake -S . -B build -G Ninja && ninja -C build)" >&2
    exit 1
fi
PY=/usr/bin/python3
mkdir -p "$OUT/plans"

# Cut the plans out of configs/multitask.conf. A task block is the lines from
# `  { name = "X";` to the next line that is exactly `  }` or `  },`.
"$PY" - "$ROOT/configs/multitask.conf" "$OUT/plans" "$EPOCHS" "$MAX_ROWS" "$ROOT" "$TASKS" "$SEED" <<'EOF'
import re, sys
src, outdir, epochs, max_rows, root, want, seed = sys.argv[1:8]
sys.path.insert(0, root + "/scripts/data")
from mtplans import pick, set_budget, task_blocks
head, tail, names, blocks = task_blocks(open(src).read(), src)
keep = pick(names, blocks, want, src) if want.split() else list(zip(names, blocks))
head = re.sub(r'^data_dir = "[^"]*";', 'data_dir = "%s";' % root, head, flags=re.M)
if seed:   # the plan's seed: shuffles, weight init, sampling
    head = re.sub(r'^seed = \d+;', 'seed = %d;' % int(seed), head, flags=re.M)
def plan(name, ks):
    h = re.sub(r'^name = "[^"]*";', 'name = "%s";' % name, head, flags=re.M)
    return h + "tasks = (\n" + ",\n".join(set_budget(b, epochs, max_rows) for _, b in ks) + "\n);\n" + tail
open("%s/multi.conf" % outdir, "w").write(plan("multi", keep))
for n, b in keep:
    open("%s/single_%s.conf" % (outdir, n), "w").write(plan("single_" + n, [(n, b)]))
open("%s/tasks.txt" % outdir, "w").write(" ".join(n for n, _ in keep) + "\n")
EOF
read -r -a TASKLIST < "$OUT/plans/tasks.txt"

# The datasets the plans read.
for ds in $(grep -ho 'dataset = "[^"]*"' "$OUT/plans/multi.conf" | cut -d'"' -f2 | sort -u); do
    "$BIN/launch" data "$ds" --out "$ROOT/data"
done

run_plan() {   # NAME: train OUT/plans/NAME.conf into OUT/runs/NAME, log in OUT/NAME.log
    local t0 t1
    if [ -n "$REUSE" ] && [ -f "$REUSE/runs/$1/eval.json" ] &&
       cmp -s "$REUSE/plans/$1.conf" "$OUT/plans/$1.conf"; then
        rm -rf "$OUT/runs/$1"
        mkdir -p "$OUT/runs"
        cp -r "$REUSE/runs/$1" "$OUT/runs/$1"
        cp "$REUSE/$1.log" "$OUT/$1.log" 2>/dev/null || true
        grep "^$1 " "$REUSE/seconds.txt" >> "$OUT/seconds.txt"
        echo "$1" >> "$OUT/reused.txt"
        echo "reused $1 from $REUSE (identical plan)"
        return
    fi
    t0=$(date +%s)
    if ! "$BIN/launch" --run-dir "$OUT/runs/$1" "$OUT/plans/$1.conf" > "$OUT/$1.log" 2>&1; then
        echo "multitask_experiment.sh: plan $1 failed; see $OUT/$1.log" >&2
        exit 1
    fi
    t1=$(date +%s)
    echo "$1 $((t1 - t0))" >> "$OUT/seconds.txt"
    echo "trained $1 in $((t1 - t0)) s"
}
: > "$OUT/seconds.txt"
: > "$OUT/reused.txt"
run_plan multi
for t in "${TASKLIST[@]}"; do
    run_plan "single_$t"
done

OFA_MTPLANS_DIR="$ROOT/scripts/data" "$PY" - "$OUT" "${TASKLIST[@]}" <<'EOF' | tee "$OUT/table.md"
import json, os, re, sys
out, tasks = sys.argv[1], sys.argv[2:]
sys.path.insert(0, os.environ["OFA_MTPLANS_DIR"])
import mtplans
n = len(tasks)

def load(run):
    d = os.path.join(out, "runs", run)
    ev = json.load(open(os.path.join(d, "eval.json")))
    summ = json.load(open(os.path.join(d, "summary.json")))
    return ev, summ

batch = {}
for t in tasks:
    txt = open(os.path.join(out, "plans", "single_%s.conf" % t)).read()
    batch[t] = int(re.search(r"batch_size = (\d+);", txt).group(1))
secs = dict(l.split() for l in open(os.path.join(out, "seconds.txt")))
def params(run):
    return mtplans.params(os.path.join(out, "runs", run))

mev, msum = load("multi")
mp = params("multi")

def steps(run):
    return mtplans.steps(os.path.join(out, "runs", run))

LOWER_IS_BETTER = ("wer", "cer", "mcd")
print("| task | metric | multi-task | single-task | ratio multi/single (error rates: single/multi) | baseline | "
      "param ratio | batches multi/single | examples multi/single |")
print("|---|---|---|---|---|---|---|---|---|")
sp_total = 0
for t in tasks:
    sev, ssum = load("single_" + t)
    me, se = mev.get(t, {}), sev.get(t, {})
    mv, sv = me.get("value"), se.get("value")
    # Quality ratio, > 1 where the multi-task model is better: multi / single, but
    # single / multi for the error rates (lower is better).
    metric = me.get("metric", se.get("metric", "-"))
    if metric in LOWER_IS_BETTER:
        ratio = "%.2f" % (sv / mv) if sv is not None and mv else "-"
    else:
        ratio = "%.2f" % (mv / sv) if mv is not None and sv else "-"
    # The pipeline delivers the validation rows too (the eval.json "n" of the task):
    # what remains are the training examples.
    mx = msum["tasks"][t]["delivered"] - me.get("n", 0)
    sx = ssum["tasks"][t]["delivered"] - se.get("n", 0)
    sp = params("single_" + t)
    sp_total += sp or 0
    pr = "%.3f" % (mp / n / sp) if mp and sp else "1/%d" % n
    fmt = lambda v: "-" if v is None else "%.4g" % v
    print("| %s | %s | %s | %s | %s | %s | %s | %d/%d | %d/%d |" % (
        t, metric, fmt(mv), fmt(sv), ratio,
        fmt(me.get("baseline")), pr, -(-mx // batch[t]), -(-sx // batch[t]), mx, sx))
print()
print("multi-task model: %s parameters for %d tasks; single-task models: %s parameters in all "
      "(parameter ratio per task = multi / N / single)." % (mp, n, sp_total or "?"))
print("optimizer steps: multi %d (each a round of one batch of every task); singles %s." % (
    steps("multi"), "/".join(str(steps("single_" + t)) for t in tasks)))
reused = open(os.path.join(out, "reused.txt")).read().split() if os.path.exists(
    os.path.join(out, "reused.txt")) else []
if reused:
    print("reused from an earlier run of an identical plan: %s." % ", ".join(reused))
print("wall time: multi %s s; singles %s s in all." % (
    secs.get("multi"), sum(int(v) for k, v in secs.items() if k != "multi")))
EOF
echo "table: $OUT/table.md"
