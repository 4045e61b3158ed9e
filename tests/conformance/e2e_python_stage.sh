#!/usr/bin/env bash
# e2e_python_stage.sh: a real plan through launch with the tokenize tier swapped for the
# Python stage (stages/python/ofa_text_tokenize.py) by `stages.tokenize.program`.
#
# Two text-only tasks over the committed fixtures (the questions and answers of
# stamps_vqa_small.tsv with two ||| templates; the captions of stamps_caption_small.tsv
# with a short max_src_len, so the truncation rule cuts), two epochs and the validation
# pass, consumer ofa-sink --digest:
#   run c: the C stage ofa-tokenize over ipc://;
#   run py: the Python stage, two workers of one credit each, over tcp:// with the run's
#           CURVE keys (--curve FILE), as on a cluster.
# Both must deliver every sample with lost 0, and their batches must be byte-identical
# (the digest covers every tensor of every batch), which shows the Python stage builds
# the same model input as the C one. The short max_src_len makes the truncation rule
# reject some questions (prompt text alone is too long): both stages must reject the
# same samples with the same reason.
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
TMP=$(mktemp -d /tmp/ofa-e2e-py-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
D=$SRC/tests/data
fail() { echo "FAIL: $*"; exit 1; }

cut -f1,3,4 "$D/stamps_vqa_small.tsv" > "$TMP/qa.tsv"
cut -f1,3 "$D/stamps_caption_small.tsv" | grep -P '^\d+\t.' > "$TMP/cap.tsv"
nqa=$(wc -l < "$TMP/qa.tsv")
ncap=$(wc -l < "$TMP/cap.tsv")

# plan NAME TRANSPORT TOKENIZE-STAGE-SETTINGS
plan() {
    cat > "$TMP/$1.conf" <<CONF
name = "$1";
seed = 11;
transport = "$2";
tasks = (
  { name = "qa";
    instruction = "[TEXT:question] -> [TEXT:answer,closed_set] ||| question: \" [TEXT:question,uncased] \" answer? -> [TEXT:answer,closed_set]";
    train = ["$TMP/qa.tsv"]; valid = ["$TMP/qa.tsv"]; columns = ["id", "question", "answer"];
    batch_size = 4; epochs = 2; },
  { name = "recap";
    instruction = "what is the caption of \" [TEXT:cap,no_punctuation] \"? -> [TEXT:cap,uncased,max_length=5]";
    train = ["$TMP/cap.tsv"]; valid = ["$TMP/cap.tsv"]; columns = ["id", "cap"];
    batch_size = 8; epochs = 2; }
);
model = { size = "nano"; vocab_size = 200; max_src_len = 14; max_tgt_len = 6; };
trainer = { consumer = "sink"; };
stages = {
  tokenize = { $3 };
  sink = { program = ["ofa-sink", "--digest", "$TMP/$1.digest"]; };
};
CONF
}

count() {
    /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tasks'][sys.argv[2]][sys.argv[3]])" \
        "$TMP/run-$1/summary.json" "$2" "$3"
}

run() {
    if ! "$BIN/launch" --run-dir "$TMP/run-$1" "$TMP/$1.conf" > "$TMP/$1.out" 2>&1; then
        cat "$TMP/$1.out"; fail "launch $1 failed"
    fi
    for spec in qa:$((nqa * 3)) recap:$((ncap * 3)); do
        IFS=: read -r task want <<< "$spec"
        del=$(count "$1" "$task" delivered)
        rej=$(count "$1" "$task" rejected)
        [ "$del" -gt 0 ] && [ $((del + rej)) = "$want" ] ||
            fail "$1 $task: delivered $del + rejected $rej, want $want in all"
        [ "$(count "$1" "$task" lost)" = 0 ] || fail "$1 $task: samples lost"
    done
    # The same rejects (id, seq, stage, reason), whatever order they came in.
    /usr/bin/python3 -c "
import json, sys
rows = sorted(json.dumps({k: r[k] for k in ('task', 'id', 'seq', 'stage', 'reason')})
              for r in map(json.loads, open(sys.argv[1])))
print('\\n'.join(rows))" "$TMP/run-$1/rejects.jsonl" > "$TMP/$1.rejects"
}

plan c ipc 'workers = 1;'
plan py tcp "workers = 2; credits = 1; program = [\"/usr/bin/python3\", \"$SRC/stages/python/ofa_text_tokenize.py\"];"
run c
run py
grep -q '"tokenize.0" \[label="tokenize.0\\n/usr/bin/python3"' "$TMP/run-py/graph.dot" ||
    fail "graph.dot does not show the Python stage"
# Every sample went through a Python worker (which of the two takes how many depends
# on when each has started; in a run this short the second may take none).
/usr/bin/python3 -c "
import json, sys
p = json.load(open(sys.argv[1]))['processes']
n = sum(v.get('items_in', 0) for k, v in p.items() if k.startswith('tokenize.'))
read = json.load(open(sys.argv[2]))['total']['read']
sys.exit(0 if n == read else 'tokenize.* items_in %d, samples read %d' % (n, read))" \
    "$TMP/run-py/stages.json" "$TMP/run-py/summary.json" ||
    fail "not every sample went through the Python stage"
[ -s "$TMP/c.digest" ] || fail "no digest written"
cmp -s "$TMP/c.digest" "$TMP/py.digest" || {
    diff "$TMP/c.digest" "$TMP/py.digest" | head; fail "batches differ between the C and the Python tokenize stage"; }
[ -s "$TMP/c.rejects" ] || fail "no sample was rejected: the truncation case is not exercised"
cmp -s "$TMP/c.rejects" "$TMP/py.rejects" || {
    diff "$TMP/c.rejects" "$TMP/py.rejects" | head; fail "the two stages rejected different samples"; }
echo "e2e_python_stage: OK ($((nqa * 3)) + $((ncap * 3)) samples, $(wc -l < "$TMP/c.digest") digest lines identical, $(wc -l < "$TMP/c.rejects") identical rejects)"
