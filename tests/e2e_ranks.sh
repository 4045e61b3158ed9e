#!/usr/bin/env bash
# e2e_ranks.sh: a plan with trainer.ranks = 2 through launch: the two CPU ranks run under
# mpirun as one trainer group. Checks: launch exits 0; no sample is lost; both ranks
# report the same number of group steps and weights identical to rank 0's (each rank
# compares its weights with rank 0's bit for bit at the end); the loss falls; eval.json
# and a checkpoint are written. Then SIGINT to launch during a longer run of the same
# plan: both ranks stop after one step with its checkpoint, launch exits 130; --resume
# ends it with the checkpoint and metrics of a run never stopped. Paths from
# OFA_SOURCE_DIR / OFA_BINARY_DIR (CTest).
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
DIR=$(mktemp -d /tmp/e2e_ranks.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*"; for f in "$DIR"/launch.log "$DIR"/run/logs/trainer.log; do [ -f "$f" ] && tail -20 "$f"; done; exit 1; }

cat > "$DIR/ranks.conf" <<CONF
name = "ranks2";
seed = 5;
data_dir = "$SRC/tests/data";
tasks = (
 { name = "caption"; instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
   train = ["stamps_caption_small.tsv"]; valid = ["stamps_caption_small.tsv"];
   columns = ["id", "img", "cap"]; batch_size = 4; epochs = 4; }
);
model = { size = "nano"; image_size = 96; patch = 16; vocab_size = 300; };
trainer = { backend = "cpu"; threads = 1; ranks = 2; lr = 0.002; warmup = 5; log_every = 2;
            max_gen_len = 8; };
stages = { image = { workers = 1; }; tokenize = { workers = 1; }; };
CONF

"$BIN/launch" --run-dir "$DIR/run" "$DIR/ranks.conf" > "$DIR/launch.log" 2>&1 || fail "launch exited $?"
RUN=$DIR/run
grep -q '"total": {[^}]*"lost": 0' "$RUN/summary.json" || fail "samples lost: $(cat "$RUN/summary.json")"
grep -q '"delivered": [1-9]' "$RUN/summary.json" || fail "nothing delivered"
for r in 0 1; do
  grep -q "rank $r of 2: [0-9]* group steps, weights identical to rank 0's" "$RUN/logs/trainer.log" \
    || fail "rank $r did not report weights identical to rank 0's"
done
steps=$(grep -o "rank [01] of 2: [0-9]* group steps" "$RUN/logs/trainer.log" | awk '{print $5}' | sort -u)
[ "$(echo "$steps" | wc -l)" = 1 ] || fail "ranks took different numbers of steps: $steps"
[ "$steps" -ge 10 ] || fail "only $steps group steps"
first=$(head -1 "$RUN/metrics.jsonl" | grep -o '"loss":[0-9.]*' | cut -d: -f2)
last=$(tail -1 "$RUN/metrics.jsonl" | grep -o '"loss":[0-9.]*' | cut -d: -f2)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' || fail "loss did not fall: $first -> $last"
[ -s "$RUN/eval.json" ] || fail "no eval.json"
ls "$RUN"/checkpoints/*.safetensors > /dev/null 2>&1 || fail "no checkpoint"
echo "ok: 2 ranks, $steps group steps, loss $first -> $last, weights identical, lost 0"

# SIGINT to launch while the group trains (a user's Ctrl-C): the ranks, not mpirun, get
# the signal, stop after the same group step with rank 0's checkpoint of it, mpirun exits
# 0 and launch 130 ("stopped by Interrupt", not "trainer died"). Then --resume finishes
# the run: its last checkpoint equals, bit for bit, that of the same plan run without a
# stop, and so does every metrics line after the first window of the resumed run.
sed 's/epochs = 4;/epochs = 40;/' "$DIR/ranks.conf" > "$DIR/long.conf"
"$BIN/launch" --run-dir "$DIR/whole" "$DIR/long.conf" > "$DIR/whole.log" 2>&1 ||
  fail "the run without a stop exited $?"
"$BIN/launch" --run-dir "$DIR/long" "$DIR/long.conf" > "$DIR/long.log" 2>&1 &
L=$!
for _ in $(seq 300); do
  sleep 0.1
  [ -s "$DIR/long/metrics.jsonl" ] && break
done
[ -s "$DIR/long/metrics.jsonl" ] || { kill $L; fail "the long run never logged a step"; }
kill -INT $L
rc=0
wait $L || rc=$?
tlog=$DIR/long/logs/trainer.log
[ $rc = 130 ] || { tail -n 5 "$DIR/long.log" "$tlog"; fail "launch exited $rc after SIGINT, want 130"; }
grep -q "trainer died" "$DIR/long.log" && fail "launch reported the group as dead after SIGINT"
stops=$(grep -o "signal: stopped with a checkpoint at step [0-9]*" "$tlog" || true)
[ "$(echo "$stops" | grep -c .)" = 2 ] && [ "$(echo "$stops" | sort -u | wc -l)" = 1 ] ||
  { tail -n 5 "$tlog"; fail "the ranks did not both stop at one step on SIGINT"; }
s=${stops##* }
[ -f "$DIR/long/checkpoints/ckpt-$(printf %08d "$s").safetensors" ] ||
  fail "no checkpoint of step $s after SIGINT"
echo "ok: SIGINT: both ranks stopped after step $s with its checkpoint, launch exited 130"
"$BIN/launch" --resume --run-dir "$DIR/long" "$DIR/long.conf" > "$DIR/resume.log" 2>&1 ||
  { tail -n 5 "$DIR/resume.log"; fail "the resumed run exited $?"; }
/usr/bin/python3 - "$DIR/whole" "$DIR/long" "$s" <<'PY' || fail "the resumed run differs from the run without a stop"
import glob, json, struct, sys
whole, resumed, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])

def tensors(run):
    path = sorted(glob.glob(run + "/checkpoints/*.safetensors"))[-1]
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    return path.rsplit("/", 1)[1], {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]
                                    for k, v in head.items() if k != "__metadata__"}

def lines(run):
    return {m["step"]: m["loss"] for m in map(json.loads, open(run + "/metrics.jsonl")) if "loss" in m}

(nw, tw), (nr, tr) = tensors(whole), tensors(resumed)
if nw != nr or tw.keys() != tr.keys():
    print("FAIL: last checkpoints", nw, nr); sys.exit(1)
differ = [k for k in tw if tw[k] != tr[k]]
if differ:
    print("FAIL: %d of %d tensors differ, e.g. %s" % (len(differ), len(tw), differ[0])); sys.exit(1)
lw, lr = lines(whole), lines(resumed)
after = [st for st in lw if st > stop - stop % 2 + 2]   # log_every 2: past the first window
bad = [(st, lw[st], lr.get(st)) for st in after if lr.get(st) != lw[st]]
if not after or bad:
    print("FAIL: metrics lines after the resumed run's first window", bad[:3] or "none"); sys.exit(1)
print("ok: resumed after step %d: %s and its %d tensors bit-identical to the run without a stop; "
      "%d metrics lines after the first window identical" % (stop, nr, len(tw), len(after)))
PY
echo "PASS: 2 ranks"
