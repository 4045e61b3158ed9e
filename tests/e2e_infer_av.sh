#!/usr/bin/env bash
# e2e_infer_av.sh: ofa-infer on VIDEO and MOTION inputs answers what the trainer's own
# evaluation generated for the same validation item from the same checkpoint.
#
# One plan, two tasks on the committed fixtures (tests/data): a video_caption-like task
# (five real clips of four containers and codecs, the slot's frames= and image_size=
# set), a motion_label-like closed-set task and an open-text one (the CMU fixture walking, the same frames
# reversed, and its first pose held; the plan's ofa-motion flags cut windows of 8 of
# its 40 frames, so the validation window is the middle one, not the whole clip). All
# are scored by exact_match.
#   1. launch trains the nano model (a few hundred steps, seconds) and writes eval.json
#      and the final checkpoint;
#   2. ofa-infer answers every validation item from that checkpoint;
#   3. eval.json's exact_match must equal the share of those answers equal to the
#      references (the trainer scored the same outputs);
#   4. the validation files get ofa-infer's answers as their references and the
#      finished run is resumed: the trainer skips every training batch (the checkpoint's
#      cursor), loads the same weights and evaluates again. exact_match must now be 1
#      for every task: every output of the trainer's evaluation equals ofa-infer's
#      answer for that item. (No file of per-item predictions exists; this reads them
#      through the trainer's own metric.)
#   5. --verbose says the clip and the BVH were prepared with the slot's and the plan's
#      settings (frames, size, window), which a closed-set answer may not reveal;
#   6. a truncated video and a BVH with a joint missing its CHANNELS line make ofa-infer
#      exit non-zero with a reason naming the file.
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
TMP=$(mktemp -d /tmp/ofa-infer-av-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
D=$SRC/tests/data
fail() { echo "FAIL: $*"; exit 1; }

# Motion clips: the fixture, its frames in reverse order, and its first frame held.
BVH=$D/motion/01_01_40f.bvh
awk '{print} /^Frame Time:/{exit}' "$BVH" > "$TMP/rev.bvh"
awk 'f{print} /^Frame Time:/{f=1}' "$BVH" | tac >> "$TMP/rev.bvh"
awk '{print} /^Frame Time:/{exit}' "$BVH" > "$TMP/hold.bvh"
first=$(awk 'f{print; exit} /^Frame Time:/{f=1}' "$BVH")
for _ in $(seq 40); do echo "$first"; done >> "$TMP/hold.bvh"
printf '%s\t%s\t%s\n' \
    1 "$BVH" "walk" \
    2 "$TMP/rev.bvh" "walk backwards" \
    3 "$TMP/hold.bvh" "stand still" > "$TMP/mot.tsv"
printf '%s\t%s\t%s\n' \
    1 "$D/video/koala_right.mp4" "a koala moves right" \
    2 "$D/video/vtest_short.avi" "people walk in a street" \
    3 "$D/bad/video/ok_h264.mp4" "a small h264 clip" \
    4 "$D/bad/video/ok_mpeg4.avi" "a tiny mpeg4 clip" \
    5 "$D/bad/video/ok_mjpeg.mkv" "a motion jpeg clip" > "$TMP/vid.tsv"
# The validation files start as copies; step 4 rewrites their references.
cp "$TMP/mot.tsv" "$TMP/mot_valid.tsv"
cp "$TMP/mot.tsv" "$TMP/mot_valid2.tsv"
cp "$TMP/vid.tsv" "$TMP/vid_valid.tsv"

cat > "$TMP/plan.conf" <<CONF
name = "infer_av";
seed = 3;
tasks = (
  { name = "vcap";
    instruction = "[VIDEO:video,frames=2,image_size=32] what does the video describe? -> [TEXT:cap]";
    train = ["$TMP/vid.tsv"]; valid = ["$TMP/vid_valid.tsv"]; columns = ["id", "video", "cap"];
    batch_size = 2; epochs = 40; metric = "exact_match"; },
  { name = "mlabel";
    instruction = "[MOTION:bvh] what is the motion? -> [TEXT:label,closed_set]";
    train = ["$TMP/mot.tsv"]; valid = ["$TMP/mot_valid.tsv"]; columns = ["id", "bvh", "label"];
    batch_size = 3; epochs = 60; metric = "exact_match"; },
  { name = "mcap";
    instruction = "[MOTION:bvh] what is the person doing? -> [TEXT:label]";
    train = ["$TMP/mot.tsv"]; valid = ["$TMP/mot_valid2.tsv"]; columns = ["id", "bvh", "label"];
    batch_size = 3; epochs = 8; metric = "exact_match"; }
);
model = { size = "nano"; image_size = 64; video_frames = 4; vocab_size = 300;
          motion_channels = 189; };
trainer = { backend = "cpu"; threads = 1; lr = 0.005; warmup = 10; max_gen_len = 8; };
stages = {
  motion = { program = ["ofa-motion", "--window", "8", "--stride", "4", "--step", "1"]; };
};
CONF

RUN=$TMP/run
t0=$(date +%s.%N)
"$BIN/launch" --run-dir "$RUN" "$TMP/plan.conf" > "$TMP/launch.out" 2>&1 ||
    { tail -20 "$TMP/launch.out"; fail "launch failed"; }
t1=$(date +%s.%N)
ckpts=("$RUN"/checkpoints/ckpt-*.safetensors)
[ ${#ckpts[@]} = 1 ] && [ -f "${ckpts[0]}" ] || fail "want one checkpoint, got: ${ckpts[*]}"
CKPT=${ckpts[0]}
cp "$RUN/eval.json" "$TMP/eval1.json"

# value TASK [FILE]: eval.json's value and n for the task.
value() {
    /usr/bin/python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))[sys.argv[2]]; print(e["value"], e["n"], e["metric"])' \
        "${2:-$RUN/eval.json}" "$1"
}

# answers TASK COLUMN TSV OUT: ofa-infer's answer for every row, as a TSV with the
# answers in place of the references.
answers() {
    : > "$4"
    while IFS=$'\t' read -r id path _; do
        a=$("$BIN/ofa-infer" "$CKPT" --task "$1" --input "$2=$path") ||
            fail "ofa-infer --task $1 --input $2=$path failed"
        [ -n "$a" ] || fail "ofa-infer --task $1 --input $2=$path printed nothing"
        printf '%s\t%s\t%s\n' "$id" "$path" "$a" >> "$4"
    done < "$3"
}
t2=$(date +%s.%N)
answers vcap video "$TMP/vid.tsv" "$TMP/vid_ans.tsv"
answers mlabel bvh "$TMP/mot.tsv" "$TMP/mot_ans.tsv"
answers mcap bvh "$TMP/mot.tsv" "$TMP/mot2_ans.tsv"
t3=$(date +%s.%N)
echo "--- ofa-infer's answers (id, file, answer)"
cat "$TMP/vid_ans.tsv" "$TMP/mot_ans.tsv" "$TMP/mot2_ans.tsv"

# 3. The trainer's exact_match over the original references = ofa-infer's.
for spec in vcap:vid:vid mlabel:mot:mot mcap:mot:mot2; do
    IFS=: read -r task f a <<< "$spec"
    want=$(/usr/bin/python3 - "$TMP/$f.tsv" "$TMP/${a}_ans.tsv" <<'PY'
import sys
ref = [l.rstrip("\n").split("\t")[2] for l in open(sys.argv[1])]
ans = [l.rstrip("\n").split("\t")[2] for l in open(sys.argv[2])]
print(sum(a.strip() == r.strip() for a, r in zip(ans, ref)) / len(ref), len(ref))
PY
)
    read -r got n metric <<< "$(value "$task" "$TMP/eval1.json")"
    [ "$metric" = exact_match ] || fail "$task: eval.json metric $metric"
    /usr/bin/python3 -c 'import sys; a=sys.argv[1].split(); sys.exit(not (abs(float(a[0]) - float(sys.argv[2])) < 1e-5 and int(a[1]) == int(sys.argv[3])))' \
        "$want" "$got" "$n" ||
        fail "$task: eval.json exact_match $got over $n items, ofa-infer's answers give $want"
done
# The motion answers must depend on the input (a constant answer would prove little).
[ "$(cut -f3 "$TMP/mot_ans.tsv" | sort -u | wc -l)" -ge 2 ] ||
    fail "the motion model answers the same for every clip: train it longer"
[ "$(cut -f3 "$TMP/vid_ans.tsv" | sort -u | wc -l)" -ge 2 ] ||
    fail "the video model answers the same for every clip: train it longer"

# 4. ofa-infer's answers as references; the resumed run evaluates the same checkpoint.
cp "$TMP/vid_ans.tsv" "$TMP/vid_valid.tsv"
cp "$TMP/mot_ans.tsv" "$TMP/mot_valid.tsv"
cp "$TMP/mot2_ans.tsv" "$TMP/mot_valid2.tsv"
t4=$(date +%s.%N)
"$BIN/launch" --resume --run-dir "$RUN" "$TMP/plan.conf" > "$TMP/resume.out" 2>&1 ||
    { tail -20 "$TMP/resume.out"; fail "launch --resume failed"; }
t5=$(date +%s.%N)
ckpts2=("$RUN"/checkpoints/ckpt-*.safetensors)
[ "${ckpts2[*]}" = "$CKPT" ] || fail "the resumed run trained further: ${ckpts2[*]}"
grep -q 'resumed from step' "$RUN"/logs/trainer*.log || fail "the trainer did not resume"
for spec in vcap:vid mlabel:mot mcap:mot2; do
    IFS=: read -r task a <<< "$spec"
    read -r got n _ <<< "$(value "$task")"
    want_n=$(wc -l < "$TMP/${a}_ans.tsv")
    [ "$n" = "$want_n" ] || fail "$task: the resumed evaluation scored $n items, want $want_n"
    [ "$got" = 1 ] || fail "$task: the trainer's outputs equal ofa-infer's answers on a share $got of the $n items, not all"
done

# How the inputs were prepared: the slot's frames= and image_size= (2 frames, the middle
# of each half of the koala clip's 20, at 32 px), the plan's ofa-motion flags (windows of
# 8 frames, not the tier's default 64 at step 4).
"$BIN/ofa-infer" "$CKPT" --verbose --task vcap --input "video=$D/video/koala_right.mp4" \
    > /dev/null 2> "$TMP/v.err" || fail "ofa-infer --verbose failed"
grep -q "koala_right.mp4: h264 128x96, 2 of 20 frames (5 15) at 32x32, 16 px patches: 8 positions" \
    "$TMP/v.err" || { cat "$TMP/v.err"; fail "the clip was not prepared as the plan's video tier would"; }
"$BIN/ofa-infer" "$CKPT" --verbose --task mlabel --input "bvh=$BVH" > /dev/null 2> "$TMP/m.err" ||
    fail "ofa-infer --verbose failed"
grep -q "01_01_40f.bvh: 8 frames x 189 features (window 8, stride 4, step 1; 8 real)" "$TMP/m.err" ||
    { cat "$TMP/m.err"; fail "the BVH was not prepared as the plan's motion tier would"; }

# 5. Bad files: a clear error naming the file, non-zero exit.
bad() {
    if "$BIN/ofa-infer" "$CKPT" --task "$1" --input "$2=$3" > "$TMP/bad.out" 2> "$TMP/bad.err"; then
        fail "ofa-infer accepted $3"
    fi
    grep -q -- "$3: .*$4" "$TMP/bad.err" || { cat "$TMP/bad.err"; fail "ofa-infer on $3: no reason naming the file"; }
    echo "refused: $(head -1 "$TMP/bad.err")"
}
bad vcap video "$D/bad/video/bad_truncated.mp4" "corrupt"
bad vcap video "$D/bad/video/bad_truncated.avi" ""
bad mlabel bvh "$D/bad/bvh/bad_no_channels.bvh" "has no CHANNELS line"
bad mlabel bvh "$D/bad/bvh/bad_cut_hierarchy.bvh" ""

printf 'e2e_infer_av: OK (train %.1f s, %d ofa-infer answers %.1f s, resumed evaluation %.1f s)\n' \
    "$(echo "$t1 - $t0" | bc)" "$(cat "$TMP/vid_ans.tsv" "$TMP/mot_ans.tsv" "$TMP/mot2_ans.tsv" | wc -l)" \
    "$(echo "$t3 - $t2" | bc)" "$(echo "$t5 - $t4" | bc)"
