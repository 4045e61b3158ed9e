#!/usr/bin/env bash
# e2e_detection.sh: object detection through the real pipeline (launch -> source ->
# ofa-image -> ofa-tokenize -> batcher -> ofa-trainer), on the committed fixture
# tests/data/object_detection_small.tsv: 24 rows of data/object_detection's layout
# (x0,y0,x1,y1,class_id,class_name objects joined by &&), four of them bad on purpose.
#
# The plan is the preset's instruction `( [BOX] [TEXT])*` with group_column and metric
# map, nano, trained on the 20 good rows and evaluated on the same file (a memorisation
# run: it checks the path, not generalisation). It must:
#   - reject exactly rows 5, 11, 17, 23 in the tokenize tier, each with a reason naming
#     column objects and the fault, and deliver the other 20 in every epoch;
#   - write eval.json with metric "map" over the 20 rows, a constant-objects baseline,
#     and a value above that baseline by a wide margin: the generated objects were
#     parsed back and matched, box and label, to the references.
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
TMP=$(mktemp -d /tmp/ofa-e2e-det-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
FIX=$SRC/tests/data/object_detection_small.tsv
EPOCHS=${EPOCHS:-200}

cat > "$TMP/det.conf" <<CONF
name = "det";
seed = 3;
tasks = (
  { name = "object_detection";
    instruction = "[IMAGE:img] what are the objects in the image? -> ( [BOX] [TEXT])*";
    metric = "map";
    columns = ["id", "img", "objects"];
    group_column = "objects";
    train = ["$FIX"]; valid = ["$FIX"];
    batch_size = 10; epochs = $EPOCHS; }
);
model = { size = "nano"; vocab_size = 400; num_bins = 16; };
trainer = { backend = "cpu"; lr = 3e-3; warmup = 20; max_gen_len = 32; };
CONF

start=$(date +%s)
"$BIN/launch" --run-dir "$TMP/run" "$TMP/det.conf" > "$TMP/launch.log" 2>&1 ||
    { tail -20 "$TMP/launch.log"; fail "launch exited non-zero"; }
echo "run took $(( $(date +%s) - start )) s"

/usr/bin/python3 - "$TMP/run" "$EPOCHS" <<'PY' || fail "checks failed (run kept: KEEP=1)"
import json, sys
run, epochs = sys.argv[1], int(sys.argv[2])
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok &= bool(cond)

summ = json.load(open(run + "/summary.json"))["tasks"]["object_detection"]
# every epoch of the train split and the valid pass read the 24 rows; 4 are bad
reads = 24 * (epochs + 1)
check(summ["read"] == reads, "read %d rows (want %d)" % (summ["read"], reads))
check(summ["rejected"] == 4 * (epochs + 1), "rejected %d (want %d)" % (summ["rejected"], 4 * (epochs + 1)))
check(summ["delivered"] == 20 * (epochs + 1) and summ["lost"] == 0,
      "delivered %d, lost %d" % (summ["delivered"], summ["lost"]))

want = {5: "has 5 fields", 11: "lies outside the image", 17: "no object (empty cell)",
        23: "x0 'x' is not a number"}
seen = {}
for line in open(run + "/rejects.jsonl"):
    r = json.loads(line)
    seen.setdefault(int(r["row"]), r.get("reason", ""))
check(sorted(seen) == sorted(want), "rejected rows %s (want %s)" % (sorted(seen), sorted(want)))
for row, why in want.items():
    reason = seen.get(row, "")
    check("column objects" in reason and why in reason, "row %d: %s" % (row, reason))

ev = json.load(open(run + "/eval.json"))["object_detection"]
print(json.dumps(ev))
check(ev["metric"] == "map" and ev["n"] == 20, "map over 20 rows")
check(ev["baseline_kind"] == "constant objects" and 0 <= ev["baseline"] < 0.5,
      "baseline %s" % ev["baseline"])
check(ev["value"] is not None and ev["value"] >= ev["baseline"] + 0.5,
      "map %s beats the baseline %s by >= 0.5" % (ev["value"], ev["baseline"]))
sys.exit(0 if ok else 1)
PY
echo "PASS"
