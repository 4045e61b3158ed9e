#!/bin/bash
# launch --slurm on a throw-away local Slurm cluster (3 fake nodes, ../shared/slurm/up.sh):
# run 1: a sink plan with 3 image workers; summary.json has lost 0 and delivered = read -
#        rejected, stages.json shows processes on >= 2 nodes with step ids, and the image
#        workers on the nodes that stages.image.nodes names;
# run 2: one image worker's step is scancel'ed mid-run; it is restarted, nothing is lost.
# Exit 77 (CTest SKIP) only where Slurm cannot start. Always tears the cluster down.
set -u
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
SHARED=${OFA_SHARED_DIR:-$SRC/../shared}
[ -x "$SHARED/slurm/up.sh" ] || SHARED=/work/shared
export SLURM_LOCAL=${SLURM_LOCAL:-/tmp/ofa-slurm-test}
export SLURM_PORT_BASE=${SLURM_PORT_BASE:-17817}
TMP=$(mktemp -d /tmp/ofa-slurm-e2e-XXXXXX)
cleanup() { "$SHARED/slurm/down.sh" >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

if ! SLURM_INSTALL=1 SLURM_NODES=3 SLURM_CPUS=8 "$SHARED/slurm/up.sh" >"$TMP/up.log" 2>&1; then
    tail -n 20 "$TMP/up.log"; echo "SKIP: Slurm cannot start here"; exit 77
fi
. "$SLURM_LOCAL/env.sh"
FX=$SRC/tests/data/stamps_caption_small.tsv

plan() {  # plan FILE EPOCHS
    cat >"$1" <<PLAN
name = "slurm";
seed = 3;
tasks = ( { name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["$FX"]; valid = ["$FX"]; columns = ["id", "img", "cap"];
    batch_size = 8; epochs = $2; } );
model = { size = "nano"; vocab_size = 300; };
trainer = { consumer = "sink"; };
stages = { image = { workers = 3; credits = 4; nodes = ["1", "2"]; }; tokenize = { workers = 1; }; };
PLAN
}

check() {  # check RUN_DIR: summary and placement
    /usr/bin/python3 - "$1" <<'PY' || exit 1
import json, sys
rd = sys.argv[1]
t = json.load(open(rd + "/summary.json"))["total"]
if t["lost"] != 0 or t["delivered"] != t["read"] - t["rejected"] or t["read"] == 0:
    print("FAIL: summary", t); sys.exit(1)
procs = json.load(open(rd + "/stages.json"))["processes"]
nodes = {p.get("node") for p in procs.values() if p.get("node")}
steps = [p.get("slurm_step") for p in procs.values()]
if len(nodes) < 2 or any(s is None for s in steps):
    print("FAIL: placement", {k: (p.get("node"), p.get("slurm_step")) for k, p in procs.items()}); sys.exit(1)
print(f"ok: read {t['read']} delivered {t['delivered']} rejected {t['rejected']} lost 0 "
      f"redispatched {t['redispatched']}; nodes {sorted(nodes)}")
PY
}

# Run 1: plain run through srun steps.
plan "$TMP/p1.conf" 3
timeout 120 salloc -N3 "$BIN/launch" --slurm --run-dir "$TMP/r1" "$TMP/p1.conf" \
    >"$TMP/r1.out" 2>&1 || { tail -n 30 "$TMP/r1.out"; fail "run 1: launch failed"; }
check "$TMP/r1"
# The plan's placement keys: image workers only on the allocation's 2nd and 3rd nodes
# (stages.image.nodes = ["1", "2"]), never beside the broker on the first.
/usr/bin/python3 - "$TMP/r1" <<'PY' || fail "run 1: image workers not where stages.image.nodes put them"
import json, sys
procs = json.load(open(sys.argv[1] + "/stages.json"))["processes"]
hub = procs["broker"].get("node")
img = {k: p.get("node") for k, p in procs.items() if k.startswith("image.")}
if len(img) != 3 or hub in img.values() or len(set(img.values())) != 2:
    print("FAIL: placement keys", hub, img); sys.exit(1)
print(f"ok: broker on {hub}, image workers on {sorted(set(img.values()))} as placed")
PY

# Run 2: scancel the step of image.1 once it has worked a while (auto mode: no --slurm).
plan "$TMP/p2.conf" 400
timeout 200 salloc -N3 "$BIN/launch" --run-dir "$TMP/r2" "$TMP/p2.conf" >"$TMP/r2.out" 2>&1 &
SALLOC=$!
victim=""
for _ in $(seq 600); do
    sleep 0.1
    victim=$(/usr/bin/python3 - "$TMP/r2" 2>/dev/null <<'PY'
import json, sys
p = json.load(open(sys.argv[1] + "/stages.json"))["processes"].get("image.1", {})
if p.get("items_in", 0) > 50 and p.get("slurm_step") is not None:
    print(p["slurm_step"])
PY
)
    [ -n "$victim" ] && break
done
[ -n "$victim" ] || { kill $SALLOC; fail "run 2: image.1 never reported a step"; }
step=$(squeue -h -s -o "%i %j" | awk '$2 == "image.1" {print $1}' | head -n 1)
[ "${step#*.}" = "$victim" ] || { squeue -s; tail -5 "$TMP/r2.out"; } ; [ "${step#*.}" = "$victim" ] || fail "squeue shows step '$step' for image.1, stats say $victim"
scancel "$step" || fail "scancel $step"
echo "cancelled step $step (image.1)"
wait $SALLOC || { tail -n 30 "$TMP/r2.out"; fail "run 2: launch failed"; }
grep -q "image.1.*restarting" "$TMP/r2.out" || { cat "$TMP/r2.out"; fail "run 2: image.1 not restarted"; }
check "$TMP/r2"
echo "ok: slurm e2e"
