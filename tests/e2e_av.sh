#!/usr/bin/env bash
# e2e_av.sh: the audio, video and motion tiers inside the real pipeline, through launch
# with a sink consumer: source -> broker -> ofa-audio / ofa-video / ofa-motion ->
# ofa-tokenize -> ofa-batcher -> ofa-sink.
#
# Rows are the committed fixtures (real speech as WAV, MP3, Ogg, FLAC; the koala clip
# and the vtest cut; the CMU BVH), plus one bad row per tier (a WAV cut in half, an MP3
# in a video column, a BVH cut inside its hierarchy). Two epochs and the validation pass.
#   run A: one worker per tier;
#   run B: three audio/video/motion workers with one credit each (maximal reordering),
#          SpecAugment on in both runs.
# Both must deliver the expected counts with lost 0, write the bad rows to
# rejects.jsonl with the tier that refused them and the reason, and produce
# byte-identical batches (ofa-sink --digest). The batches carry the token layout, whose
# source length counts the audio frames, video patches and motion frames the tiers
# made; they do not carry the feature tensors themselves yet (the batcher packs "img"
# only), so the values, SpecAugment masks included, are checked by the unit tests
# (test_audio.c: the same sample gets the same masks from ofa-audio).
set -euo pipefail
SRC=${OFA_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
BIN=${OFA_BINARY_DIR:-$SRC/build}/bin
TMP=$(mktemp -d /tmp/ofa-e2e-av-XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$TMP"' EXIT
D=$SRC/tests/data
fail() { echo "FAIL: $*"; exit 1; }

head -c 11000 "$D/audio/hello_8k.wav" > "$TMP/cut.wav"
head -c 1500 "$D/motion/01_01_40f.bvh" > "$TMP/cut.bvh"
printf '%s\t%s\t%s\n' \
    1 "$D/audio/hello_8k.wav" "hello world" \
    2 "$D/audio/hello_8k.mp3" "hello world" \
    3 "$D/audio/tts_16k.wav" "the quick brown fox jumps over the dog" \
    4 "$D/audio/tts_22k_stereo.flac" "the quick brown fox jumps over the dog" \
    5 "$D/audio/hello_8k.ogg" "hello world" \
    6 "$TMP/cut.wav" "hello world" > "$TMP/asr.tsv"
printf '%s\t%s\t%s\n' \
    1 "$D/video/koala_right.mp4" "a koala moves right" \
    2 "$D/video/vtest_short.avi" "people walk in a street" \
    3 "$D/audio/hello_8k.mp3" "not a video" > "$TMP/vid.tsv"
printf '%s\t%s\t%s\n' \
    1 "$D/motion/01_01_40f.bvh" "a person walks" \
    2 "$TMP/cut.bvh" "a person walks" > "$TMP/mot.tsv"

# plan NAME WORKERS CREDITS
plan() {
    cat > "$TMP/$1.conf" <<CONF
name = "$1";
seed = 5;
tasks = (
  { name = "asr";
    instruction = "[AUDIO:wav] what is the text corresponding to the voice? -> [TEXT:text]";
    train = ["$TMP/asr.tsv"]; valid = ["$TMP/asr.tsv"]; columns = ["id", "wav", "text"];
    batch_size = 2; epochs = 2; },
  { name = "vcap";
    instruction = "[VIDEO:video,frames=2,image_size=32] what does the video describe? -> [TEXT:cap]";
    train = ["$TMP/vid.tsv"]; valid = ["$TMP/vid.tsv"]; columns = ["id", "video", "cap"];
    batch_size = 2; epochs = 2; },
  { name = "mcap";
    instruction = "[MOTION:mocap] what is the person doing? -> [TEXT:cap]";
    train = ["$TMP/mot.tsv"]; valid = ["$TMP/mot.tsv"]; columns = ["id", "mocap", "cap"];
    batch_size = 1; epochs = 2; }
);
model = { size = "nano"; vocab_size = 300; max_src_len = 512; };
trainer = { consumer = "sink"; };
stages = {
  audio = { workers = $2; credits = $3; program = ["ofa-audio", "--specaugment", "2,10,2,20"]; };
  video = { workers = $2; credits = $3; };
  motion = { workers = $2; credits = $3; program = ["ofa-motion", "--window", "8", "--step", "4"]; };
  sink = { program = ["ofa-sink", "--digest", "$TMP/$1.digest"]; };
};
CONF
}

# count RUN TASK FIELD
count() {
    /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tasks'][sys.argv[2]][sys.argv[3]])" \
        "$TMP/run-$1/summary.json" "$2" "$3"
}

run() {
    if ! "$BIN/launch" --run-dir "$TMP/run-$1" "$TMP/$1.conf" > "$TMP/$1.out" 2>&1; then
        cat "$TMP/$1.out"; fail "launch $1 failed"
    fi
    # Rows x (2 epochs + validation); one bad row per task.
    for spec in asr:15:3 vcap:6:3 mcap:3:3; do
        IFS=: read -r task want_del want_rej <<< "$spec"
        [ "$(count "$1" "$task" delivered)" = "$want_del" ] ||
            fail "$1 $task: delivered $(count "$1" "$task" delivered), want $want_del"
        [ "$(count "$1" "$task" rejected)" = "$want_rej" ] ||
            fail "$1 $task: rejected $(count "$1" "$task" rejected), want $want_rej"
        [ "$(count "$1" "$task" lost)" = 0 ] || fail "$1 $task: samples lost"
    done
    local rj=$TMP/run-$1/rejects.jsonl
    [ "$(grep -c '"stage": "audio".*column wav: truncated WAV' "$rj")" = 3 ] || { cat "$rj"; fail "$1: audio rejects"; }
    [ "$(grep -c '"stage": "video".*column video: no video stream' "$rj")" = 3 ] || { cat "$rj"; fail "$1: video rejects"; }
    [ "$(grep -c '"stage": "motion".*column mocap: .*truncated' "$rj")" = 3 ] || { cat "$rj"; fail "$1: motion rejects"; }
}

plan a 1 4
plan b 3 1
run a
run b
[ -s "$TMP/a.digest" ] || fail "no digest written"
cmp -s "$TMP/a.digest" "$TMP/b.digest" || fail "batches differ between 1 and 3 workers per tier"
echo "e2e_av: OK ($(wc -l < "$TMP/a.digest") digest lines identical)"
