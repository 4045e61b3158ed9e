#!/usr/bin/env bash
# soak.sh: run a plan at full speed for a long time and watch every stage's memory.
#
#   scripts/soak.sh [--minutes M] [--warmup S] [--plan FILE] [--run-dir DIR]
#                   [--check PCT] [--bin DIR]
#
# Starts `launch` on the plan (default: caption + VQA on the built stamps datasets,
# a thousand epochs into ofa-sink, so the decode tiers, the broker and the batcher run
# as fast as they can), samples the resident set size of every process of the run once
# a second (VmRSS less RssShmem from /proc/PID/status: the shared-memory arenas' pages
# are not the process's own) into RUN/soak_rss.tsv (time, process, pid, kB;
# a restarted process shows up with its new pid), stops the run with SIGINT after M
# minutes (10), and prints per stage: RSS at the end of the warm-up (median of the
# minute after --warmup seconds, 120), at the end (median of the last minute), the
# growth between them, and the least-squares slope after the warm-up in kB/min.
# --check PCT: exit 1 when a stage grew by more than PCT % and more than 4 MB after the
# warm-up (the CTest `soak_rss`, label long, uses --check 10).
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
MINUTES=10 WARMUP=120 PLAN="" RUN="" CHECK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --plan) PLAN=$2; shift 2 ;;
        --run-dir) RUN=$2; shift 2 ;;
        --check) CHECK=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$BIN/launch" ] || { echo "soak.sh: $BIN/launch not built (--bin DIR)" >&2; exit 2; }
TMP=$(mktemp -d /tmp/ofa-soak-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
RUN=${RUN:-$TMP/run}
if [ -z "$PLAN" ]; then
    for d in stamps_caption stamps_vqa; do
        [ -f "$SRC/data/$d/train.tsv" ] || {
            echo "soak.sh: $SRC/data/$d missing: build it with \`launch data $d\`" >&2; exit 2; }
    done
    PLAN=$TMP/soak.conf
    cat > "$PLAN" <<EOF
name = "soak";
seed = 3;
tasks = (
  { name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["$SRC/data/stamps_caption/train.tsv"]; valid = ["$SRC/data/stamps_caption/valid.tsv"];
    columns = ["id", "img", "cap"]; batch_size = 16; epochs = 1000; },
  { name = "vqa";
    instruction = "[IMAGE:image] [TEXT:question] -> [TEXT:answer]";
    train = ["$SRC/data/stamps_vqa/train.tsv"]; valid = ["$SRC/data/stamps_vqa/valid.tsv"];
    columns = ["id", "image", "question", "answer"]; batch_size = 16; epochs = 1000; }
);
model = { size = "nano"; vocab_size = 300; };
trainer = { consumer = "sink"; };
stages = { image = { workers = 2; credits = 4; }; tokenize = { workers = 1; }; };
EOF
fi
echo "soak: $PLAN for $MINUTES min (warm-up $WARMUP s); run directory $RUN"
"$BIN/launch" --run-dir "$RUN" "$PLAN" > "$TMP/launch.out" 2>&1 &
LPID=$!
/usr/bin/env python3 - "$RUN" "$LPID" "$MINUTES" <<'EOF'
import json, os, sys, time
rd, lpid, minutes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = None
t0 = time.time()
while time.time() - t0 < minutes * 60:
    try:
        os.kill(lpid, 0)
    except ProcessLookupError:
        print("soak: launch ended before the time was up", file=sys.stderr)
        break
    time.sleep(1.0 - (time.time() - t0) % 1.0)
    try:
        pids = json.load(open(os.path.join(rd, "pids.json")))
    except (OSError, ValueError):
        continue
    pids["launch"] = lpid
    if out is None:
        out = open(os.path.join(rd, "soak_rss.tsv"), "w")
    t = time.time() - t0
    for name, pid in sorted(pids.items()):
        try:
            # VmRSS less RssShmem: the pages of the shared-memory arenas (shm_arena) a
            # process has touched count in VmRSS and grow until each ring has gone round
            # once; they are not the process's own memory, and a leak is not among them.
            kb = {}
            for line in open(f"/proc/{pid}/status"):
                if line.startswith(("VmRSS:", "RssShmem:")):
                    kb[line.split(":")[0]] = int(line.split()[1])
            if "VmRSS" in kb:
                out.write(f"{t:.1f}\t{name}\t{pid}\t{kb['VmRSS'] - kb.get('RssShmem', 0)}\n")
        except OSError:
            pass   # exited between the listing and the read (a restart)
    out.flush()
EOF
kill -INT "$LPID" 2>/dev/null || true
wait "$LPID" || true
tail -n 3 "$TMP/launch.out" | sed 's/^/launch: /'
/usr/bin/env python3 - "$RUN/soak_rss.tsv" "$WARMUP" "${CHECK:-}" "$RUN/summary.json" <<'EOF'
import json, statistics, sys
path, warm, check = sys.argv[1], float(sys.argv[2]), sys.argv[3]
by = {}
for line in open(path):
    t, name, pid, kb = line.split("\t")
    by.setdefault(name, []).append((float(t), int(pid), int(kb)))
end = max(t for v in by.values() for t, _, _ in v)
if end < warm + 120:
    print(f"soak: only {end:.0f} s sampled; need the warm-up ({warm:.0f} s) plus 2 minutes")
    sys.exit(1)
try:
    total = json.load(open(sys.argv[4]))["total"]
    print(f"soak: {end / 60:.1f} min, {total['delivered']} samples delivered "
          f"({total['delivered'] / end:.0f}/s), lost {total['lost']}")
except (OSError, ValueError, KeyError):
    pass
print(f"{'process':<14} {'restarts':>8} {'RSS@warm MB':>12} {'RSS@end MB':>11} "
      f"{'growth MB':>10} {'growth %':>9} {'slope kB/min':>13} {'max MB':>8}")
bad = []
for name in sorted(by):
    v = by[name]
    pids = {p for _, p, _ in v}
    # The newest incarnation only: a restarted process starts from scratch.
    last = v[-1][1]
    v = [(t, kb) for t, p, kb in v if p == last]
    a = [kb for t, kb in v if warm <= t < warm + 60]
    b = [kb for t, kb in v if t >= end - 60]
    post = [(t, kb) for t, kb in v if t >= warm]
    if len(a) < 10 or len(b) < 10 or len(post) < 20:
        print(f"{name:<14} {len(pids) - 1:>8}  (too few samples after the warm-up)")
        continue
    s0, s1 = statistics.median(a), statistics.median(b)
    mt = sum(t for t, _ in post) / len(post)
    mk = sum(k for _, k in post) / len(post)
    slope = sum((t - mt) * (k - mk) for t, k in post) / max(1e-9, sum((t - mt) ** 2 for t, _ in post)) * 60
    g = s1 - s0
    pct = 100.0 * g / s0 if s0 else 0.0
    print(f"{name:<14} {len(pids) - 1:>8} {s0 / 1024:>12.1f} {s1 / 1024:>11.1f} {g / 1024:>10.2f} "
          f"{pct:>8.1f}% {slope:>13.1f} {max(k for _, k in v) / 1024:>8.1f}")
    if check and pct > float(check) and g > 4096:
        bad.append(name)
if bad:
    print(f"soak: RSS grew by more than {check} % (and 4 MB) after the warm-up: {', '.join(bad)}")
    sys.exit(1)
EOF
