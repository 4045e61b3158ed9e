#!/usr/bin/env bash
# pipeline_determinism.sh: the Determinism contract end to end (DESIGN.md): which samples
# form which batch, and the order of batches, depend only on (plan, seed, epoch).
#
# Two tasks (caption on the fixture TSV with its three bad rows, vqa on the VQA fixture)
# of different batch sizes, weights and epochs run through launch with a sink consumer:
#   run A: 1 image worker, 1 tokenize worker, generous credits;
#   run B: 4 image workers, 2 tokenize workers, 1 credit each (maximal reordering);
#   run C: as A with another seed.
# All three with length bucketing (ofa-source --bucket 3), which must keep determinism.
# A and B must write byte-identical batch digests (ofa-sink --digest: ids, step, epoch,
# split and every tensor's bytes) and delivered-id files (in delivery order); C must
# differ (so the comparison can fail). Every run: lost 0, the expected counts.
#   run D: as A with fuse_tokenize = true (the image workers tokenize; no tokenize tier):
#          byte-identical batches too.
#
# `pipeline_determinism.sh kill`: the built stamps_caption dataset (20 epochs) twice with
# 4 image workers, the second time with one worker SIGKILLed while it holds items: the
# broker re-dispatches them, and the batches must still be byte-identical.
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
TMP=$(mktemp -d /tmp/ofa-determinism-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
CAP=$SRC/tests/data/stamps_caption_small.tsv
VQA=$SRC/tests/data/stamps_vqa_small.tsv

fail() { echo "FAIL: $*"; exit 1; }

# plan NAME SEED IMAGE_WORKERS TOKENIZE_WORKERS CREDITS [TOP-LEVEL SETTING]
plan() {
    cat > "$TMP/$1.conf" <<EOF
name = "$1";
seed = $2;
${6:-}
tasks = (
  { name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["$CAP"]; valid = ["$CAP"];
    columns = ["id", "img", "cap"];
    batch_size = 8; epochs = 3; weight = 1.0; },
  { name = "vqa";
    instruction = "[IMAGE:image] [TEXT:question] -> [TEXT:answer]";
    train = ["$VQA"]; valid = ["$VQA"];
    columns = ["id", "image", "question", "answer"];
    batch_size = 5; epochs = 4; weight = 2.0; }
);
model = { size = "nano"; vocab_size = 300; };
trainer = { consumer = "sink"; };
stages = {
  image = { workers = $3; credits = $5; };
  tokenize = { workers = $4; credits = $5; };
  source = { program = ["ofa-source", "--bucket", "3"]; };
  sink = { program = ["ofa-sink", "--digest", "$TMP/$1.digest"]; };
};
EOF
}

# run NAME: launch the plan, check the summary, keep the delivered ids.
run() {
    local rd=$TMP/run-$1
    if ! "$BIN/launch" --run-dir "$rd" "$TMP/$1.conf" > "$TMP/$1.out" 2>&1; then
        cat "$TMP/$1.out"
        fail "launch of $1 exited non-zero"
    fi
    cp "$rd/delivered.tsv" "$TMP/$1.delivered"
    # caption: 40 rows, 3 bad, x 3 epochs + valid; vqa: 12 rows x 4 epochs + valid.
    python3 - "$rd/summary.json" <<'EOF' || fail "summary of $1"
import json, sys
s = json.load(open(sys.argv[1]))
t, c, v = s["total"], s["tasks"]["caption"], s["tasks"]["vqa"]
want = {"caption": (160, 148, 12), "vqa": (60, 60, 0)}
for name, (read, delivered, rejected) in want.items():
    got = s["tasks"][name]
    if (got["read"], got["delivered"], got["rejected"], got["lost"]) != (read, delivered, rejected, 0):
        print(f"task {name}: {got}, want read {read} delivered {delivered} rejected {rejected} lost 0")
        sys.exit(1)
if t["lost"] != 0:
    print(f"total: {t}")
    sys.exit(1)
EOF
}

if [ "${1:-}" = kill ]; then
    DATA=$SRC/data/stamps_caption
    [ -f "$DATA/train.tsv" ] || fail "$DATA/train.tsv missing: build it with \`launch data stamps_caption\`"
    for r in K L; do
        cat > "$TMP/$r.conf" <<EOF
name = "$r";
seed = 5;
tasks = (
  { name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["$DATA/train.tsv"]; valid = ["$DATA/valid.tsv"];
    columns = ["id", "img", "cap"]; batch_size = 16; epochs = 20; }
);
model = { size = "nano"; vocab_size = 300; };
trainer = { consumer = "sink"; };
stages = {
  image = { workers = 4; credits = 4; };
  sink = { program = ["ofa-sink", "--digest", "$TMP/$r.digest"]; };
};
EOF
    done
    "$BIN/launch" --run-dir "$TMP/run-K" "$TMP/K.conf" > "$TMP/K.out" 2>&1 || { cat "$TMP/K.out"; fail "run K"; }
    # Run L: kill image.1 once it has taken 300 items (it then holds up to its credits).
    "$BIN/launch" --run-dir "$TMP/run-L" "$TMP/L.conf" > "$TMP/L.out" 2>&1 &
    lpid=$!
    python3 - "$TMP/run-L" <<'EOF' || { kill $lpid 2>/dev/null; fail "could not kill image.1 in time"; }
import json, os, signal, sys, time
rd, end = sys.argv[1], time.time() + 60
while time.time() < end:
    time.sleep(0.02)
    try:
        st = json.load(open(os.path.join(rd, "stages.json")))["processes"]
        pids = json.load(open(os.path.join(rd, "pids.json")))
    except (OSError, ValueError, KeyError):
        continue
    if st.get("image.1", {}).get("items_in", 0) > 300 and "image.1" in pids:
        os.kill(pids["image.1"], signal.SIGKILL)
        sys.exit(0)
sys.exit(1)
EOF
    wait $lpid || { cat "$TMP/L.out"; fail "launch of run L exited non-zero"; }
    python3 - "$TMP/run-L/summary.json" <<'EOF' || fail "run L: nothing re-dispatched or something lost"
import json, sys
t = json.load(open(sys.argv[1]))["total"]
print(f"run L: {t}")
sys.exit(0 if t["redispatched"] > 0 and t["lost"] == 0 else 1)
EOF
    nb=$(wc -l < "$TMP/K.digest")
    cmp -s "$TMP/K.digest" "$TMP/L.digest" || {
        diff "$TMP/K.digest" "$TMP/L.digest" | head -20
        fail "batches differ after a worker was killed"
    }
    echo "ok: $nb batches identical with and without a killed image worker"
    exit 0
fi

plan A 11 1 1 8
plan B 11 4 2 1
plan C 12 1 1 8
plan D 11 2 1 4 "fuse_tokenize = true;"
for r in A B C D; do run $r; done

nb=$(wc -l < "$TMP/A.digest")
[ "$nb" -gt 20 ] || fail "only $nb batches in run A"
cmp -s "$TMP/A.digest" "$TMP/B.digest" || {
    diff "$TMP/A.digest" "$TMP/B.digest" | head -20
    fail "batches differ between 1 and 4 image workers"
}
cmp -s "$TMP/A.delivered" "$TMP/B.delivered" || fail "delivery order differs between runs A and B"
# Batches never mix tasks and both tasks are interleaved (mixing at the source).
cut -f2 "$TMP/A.digest" | uniq | wc -l | { read -r runs; [ "$runs" -gt 4 ] || fail "tasks not interleaved ($runs runs)"; }
cmp -s "$TMP/A.digest" "$TMP/C.digest" && fail "seed 12 gives the same batches as seed 11"
# fuse_tokenize: the image workers tokenize, no tokenize worker runs, the same batches.
cmp -s "$TMP/A.digest" "$TMP/D.digest" || {
    diff "$TMP/A.digest" "$TMP/D.digest" | head -20
    fail "batches differ with the tokenizer fused into the image workers"
}
grep -q '"tokenize' "$TMP/run-D/pids.json" && fail "run D (fuse_tokenize) started tokenize workers"
grep -q "route: image$" <("$BIN/launch" --dry-run --run-dir "$TMP/dry-D" "$TMP/D.conf") ||
    fail "the dry run of D does not show the route image"
echo "ok: $nb batches identical with 1 and 4 image workers (digests and delivery order) and with the tokenizer fused into the image workers; another seed differs"
