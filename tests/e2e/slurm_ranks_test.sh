#!/bin/bash
# The trainer group under `launch --slurm` on a throw-away local Slurm cluster (3 fake
# nodes, ../shared/slurm/up.sh): trainer.ranks = 2 runs as ONE srun step of 2 tasks that
# srun starts through its MPI plugin (trainer.mpi, default pmix), with no mpirun.
# run 1: 2 ranks of 4 rows on the node placement.trainer names; while it trains, squeue
#        lists one step "trainer" of 2 tasks there, and both ranks report that step;
#        both end with weights identical to rank 0's, nothing is lost;
# run 2: 1 rank of 8 rows (the same global batch): the same loss at every logged step
#        (relative 1e-5) and the same final checkpoint (every weight within 1e-4) as run 1;
# run 3: SIGINT to launch stops both ranks after the same step, whose checkpoint rank 0
#        writes, and launch exits 130;
#        scancel of a group's step ends both ranks at once;
# dry runs: 3 ranks on placement.trainer = ["n3", "1"] are `-m arbitrary -w n3,n2,n3`;
#        trainer.mpi = "pmi9" is refused naming the key and what srun offers.
# Fake nodes share one host, where Slurm's PMIx plugin gives every node of a step the
# same client folder (spmix_appdir_UID_JOB.STEP): a step of ranks on two fake nodes
# cannot start here, so the runs keep both ranks on one node (a real cluster has one
# slurmd per host). Exit 77 (CTest SKIP) only where Slurm cannot start or has no pmix.
set -u
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
SHARED=${OFA_SHARED_DIR:-$SRC/../shared}
[ -x "$SHARED/slurm/up.sh" ] || SHARED=/work/shared
export SLURM_LOCAL=${SLURM_LOCAL:-/tmp/ofa-slurm-ranks-test}
export SLURM_PORT_BASE=${SLURM_PORT_BASE:-17917}
TMP=$(mktemp -d /tmp/ofa-slurm-ranks-XXXXXX)
cleanup() { "$SHARED/slurm/down.sh" >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
logs() { for f in "$@"; do [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }; done; }

if ! SLURM_INSTALL=1 SLURM_NODES=3 SLURM_CPUS=8 "$SHARED/slurm/up.sh" >"$TMP/up.log" 2>&1; then
    tail -n 20 "$TMP/up.log"; echo "SKIP: Slurm cannot start here"; exit 77
fi
. "$SLURM_LOCAL/env.sh"
srun --mpi=list 2>&1 | grep -qx "[[:space:]]*pmix" || {
    srun --mpi=list; echo "SKIP: this Slurm has no pmix MPI plugin"; exit 77; }
# Job ids restart at 1 in every throw-away cluster: keep this one's PMIx client folders
# apart from another cluster's on the same host (the steps inherit the variable).
export SLURM_PMIX_TMPDIR=$TMP/pmix
mkdir -p "$SLURM_PMIX_TMPDIR"
# Any use of mpirun would leave a mark: under Slurm the ranks are srun's own tasks.
printf '#!/bin/sh\ntouch "%s/mpirun-used"\nexit 1\n' "$TMP" >"$TMP/mpirun"
chmod +x "$TMP/mpirun"
export OFA_MPIRUN=$TMP/mpirun

plan() {  # plan FILE RANKS BATCH EPOCHS [PLACEMENT_TRAINER]
    local pt=${5:-'["1"]'}
    cat >"$1" <<PLAN
name = "slurm_ranks";
seed = 5;
data_dir = "$SRC/tests/data";
tasks = (
 { name = "caption"; instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
   train = ["stamps_caption_small.tsv"]; valid = ["stamps_caption_small.tsv"];
   columns = ["id", "img", "cap"]; batch_size = $3; epochs = $4; }
);
model = { size = "nano"; image_size = 96; patch = 16; vocab_size = 300; };
trainer = { backend = "cpu"; threads = 1; ranks = $2; lr = 0.002; warmup = 5; log_every = 2;
            max_gen_len = 8; checkpoint_every = 1000; };
stages = { image = { workers = 1; }; tokenize = { workers = 1; }; };
placement = { trainer = $pt; };
PLAN
}

# Run 1: two ranks as one step; squeue is watched while it runs.
plan "$TMP/r2.conf" 2 4 4
timeout 120 salloc -N3 "$BIN/launch" --slurm --run-dir "$TMP/r1" "$TMP/r2.conf" \
    >"$TMP/r1.out" 2>&1 &
SALLOC=$!
seen=""
while kill -0 $SALLOC 2>/dev/null; do
    s=$(squeue -h -s -o "%i|%j|%N|%A" 2>/dev/null | awk -F'|' '$2 == "trainer"')
    [ -n "$s" ] && seen=$s
    sleep 0.2
done
wait $SALLOC || { logs "$TMP/r1.out" "$TMP/r1/logs/trainer.log"; fail "run 1: launch failed"; }
[ ! -e "$TMP/mpirun-used" ] || fail "run 1: mpirun was used"
# One step of 2 tasks on n2 (placement.trainer = ["1"]), not beside the hubs on n1.
[ "$(echo "$seen" | wc -l)" = 1 ] && [ "$(echo "$seen" | cut -d'|' -f3,4)" = "n2|2" ] ||
    fail "run 1: squeue showed the trainer step as '$seen', want one step of 2 tasks on n2"
for r in 0 1; do
    grep -q "rank $r of 2: [0-9]* group steps, weights identical to rank 0's" \
        "$TMP/r1/logs/trainer.log" || { logs "$TMP/r1/logs/trainer.log"; fail "run 1: rank $r"; }
done
/usr/bin/python3 - "$TMP/r1" "${seen%%|*}" <<'PY' || fail "run 1: ranks' stats"
import json, sys
rd, step = sys.argv[1], sys.argv[2].split(".")[1]
t = json.load(open(rd + "/summary.json"))["total"]
procs = json.load(open(rd + "/stages.json"))["processes"]
ranks = {k: (p.get("node"), p.get("slurm_step")) for k, p in procs.items() if k.startswith("trainer")}
if t["lost"] != 0 or t["delivered"] == 0:
    print("FAIL: summary", t); sys.exit(1)
if sorted(ranks) != ["trainer.0", "trainer.1"] or set(ranks.values()) != {("n2", step)}:
    print("FAIL: ranks", ranks, "want both on n2 in step", step); sys.exit(1)
print(f"ok: trainer.0 and trainer.1 both in step {step} on n2; delivered {t['delivered']}, lost 0")
PY

# Run 2: one rank on the same global batch (8 rows) takes the same steps.
plan "$TMP/r1.conf" 1 8 4
timeout 120 salloc -N3 "$BIN/launch" --slurm --run-dir "$TMP/r2" "$TMP/r1.conf" \
    >"$TMP/r2.out" 2>&1 || { logs "$TMP/r2.out" "$TMP/r2/logs/trainer.0.log"; fail "run 2: launch failed"; }
/usr/bin/python3 - "$TMP/r1" "$TMP/r2" <<'PY' || fail "2 ranks differ from 1 rank on the same global batch"
import glob, json, struct, sys
import numpy as np

def curve(rd):
    return [(m["step"], m["loss"]) for m in map(json.loads, open(rd + "/metrics.jsonl")) if "loss" in m]

def ckpt(rd):
    path = sorted(glob.glob(rd + "/checkpoints/*.safetensors"))[-1]
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    head = json.loads(b[8:8 + n])
    out = {}
    for k, v in head.items():
        if k != "__metadata__" and v["dtype"] == "F32":
            s, e = v["data_offsets"]
            out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype="<f4")
    return path.rsplit("/", 1)[1], out

c2, c1 = curve(sys.argv[1]), curve(sys.argv[2])
if len(c2) < 5 or [s for s, _ in c2] != [s for s, _ in c1]:
    print("FAIL: logged steps differ:", [s for s, _ in c2], [s for s, _ in c1]); sys.exit(1)
worst = max(abs(a - b) / abs(b) for (_, a), (_, b) in zip(c2, c1))
if worst > 1e-5 or not c2[-1][1] < c2[0][1] - 0.5:
    print("FAIL: loss curves", c2, c1, "worst relative difference", worst); sys.exit(1)
(n2, w2), (n1, w1) = ckpt(sys.argv[1]), ckpt(sys.argv[2])
if n2 != n1 or not w1 or w2.keys() != w1.keys():
    print("FAIL: checkpoints", n2, n1, len(w2), len(w1)); sys.exit(1)
diff = max(float(np.abs(w2[k] - w1[k]).max()) for k in w1)
if diff > 1e-4:
    print("FAIL: checkpoint weights differ by up to", diff); sys.exit(1)
print(f"ok: {len(c2)} logged steps, loss {c2[0][1]:.4f} -> {c2[-1][1]:.4f}, worst relative loss "
      f"difference {worst:.1e}; {n2}: {len(w1)} tensors, max |2 ranks - 1 rank| {diff:.1e}")
PY

# Run 3: stopping. SIGINT to launch: the consumers are signalled through scancel --signal
# of their step, so both ranks checkpoint and stop. Then scancel of a group's step.
start_long() {  # start_long RUN: launch in the background, its pid in $TMP/launch.pid
    rm -f "$TMP/launch.pid"
    timeout 120 salloc -N3 bash -c '"$1" --slurm --run-dir "$2" "$3" >"$2.out" 2>&1 &
        echo $! >"$4"; wait $!' _ "$BIN/launch" "$1" "$TMP/long.conf" "$TMP/launch.pid" \
        2>"$1.salloc" &
    SALLOC=$!
    for _ in $(seq 300); do
        sleep 0.1
        [ -s "$1/metrics.jsonl" ] && [ -s "$TMP/launch.pid" ] && return 0
    done
    kill $SALLOC; logs "$1.out" "$1/logs/trainer.log"; fail "$1: the ranks never logged a step"
}
ranks_of() { ps -eo args | grep -c "^[^ ]*ofa-trainer .*--run-dir $1 "; }
plan "$TMP/long.conf" 2 4 400
start_long "$TMP/r3"
kill -INT "$(cat "$TMP/launch.pid")"
wait $SALLOC; rc=$?
[ $rc = 130 ] || { logs "$TMP/r3.out"; fail "run 3: launch exited $rc after SIGINT, want 130"; }
# Each rank stops after the same group step, whatever step each was in when the signal
# came (a rank may be in the step's all-reduce while the other waits for its batch), and
# rank 0 writes that step's checkpoint.
stops=$(grep -o ": stopped with a checkpoint at step [0-9]*" "$TMP/r3/logs/trainer.log")
[ "$(echo "$stops" | grep -c .)" = 2 ] && [ "$(echo "$stops" | sort -u | wc -l)" = 1 ] ||
    { logs "$TMP/r3/logs/trainer.log"; fail "run 3: the ranks did not both stop at one step"; }
grep -q "signal: stopped with a checkpoint" "$TMP/r3/logs/trainer.log" ||
    fail "run 3: no rank logged the signal"
s3=${stops##* }
[ -f "$TMP/r3/checkpoints/ckpt-$(printf %08d "$s3").safetensors" ] ||
    { ls "$TMP/r3/checkpoints"; fail "run 3: no checkpoint of step $s3"; }
[ "$(ranks_of "$TMP/r3")" = 0 ] || fail "run 3: ranks left running after SIGINT"
echo "ok: SIGINT: both ranks stopped after step $s3 with its checkpoint, launch exited 130"
start_long "$TMP/r4"
step=$(squeue -h -s -o "%i %j" | awk '$2 == "trainer" {print $1}')
[ -n "$step" ] && [ "$(ranks_of "$TMP/r4")" = 2 ] || { kill $SALLOC; fail "run 4: no step with 2 ranks"; }
scancel "$step"
gone=""
for i in $(seq 50); do
    sleep 0.1
    [ "$(ranks_of "$TMP/r4")" = 0 ] && { gone=$i; break; }
done
wait $SALLOC
[ -n "$gone" ] || fail "run 4: ranks still running 5 s after scancel $step"
grep -q "trainer died" "$TMP/r4.out" || { logs "$TMP/r4.out"; fail "run 4: launch did not report the group's end"; }
echo "ok: scancel $step ended both ranks within $((gone * 100)) ms; launch reported it"

# Dry runs: the step's layout for 3 ranks over two nodes, and a plugin srun lacks.
plan "$TMP/d3.conf" 3 4 1 '["n3", "1"]'
timeout 60 salloc -N3 "$BIN/launch" --slurm --dry-run --run-dir "$TMP/d3" "$TMP/d3.conf" \
    >"$TMP/d3.out" 2>&1 || { cat "$TMP/d3.out"; fail "dry run of 3 ranks failed"; }
grep -q "^  trainer .*srun --overlap --overcommit --mpi=pmix -n 3 -m arbitrary -w n3,n2,n3 .*ofa-trainer .*--group mpi" \
    "$TMP/d3.out" || { grep trainer "$TMP/d3.out"; fail "dry run: 3 ranks not laid out n3,n2,n3"; }
plan "$TMP/bad.conf" 2 4 1
sed -i 's/ranks = 2;/ranks = 2; mpi = "pmi9";/' "$TMP/bad.conf"
timeout 60 salloc -N3 "$BIN/launch" --slurm --dry-run --run-dir "$TMP/bad" "$TMP/bad.conf" \
    >"$TMP/bad.out" 2>&1 && fail "trainer.mpi = pmi9 was accepted"
grep -q 'trainer.mpi = "pmi9": srun has no such MPI plugin (srun --mpi=list offers: .*pmix' \
    "$TMP/bad.out" || { cat "$TMP/bad.out"; fail "no clear error for trainer.mpi = pmi9"; }
echo "ok: 3 ranks laid out n3,n2,n3; $(grep -o 'trainer.mpi = "pmi9".*' "$TMP/bad.out")"
[ ! -e "$TMP/mpirun-used" ] || fail "mpirun was used"
echo "ok: slurm ranks e2e"
