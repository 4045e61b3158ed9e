#!/usr/bin/python3
"""check_av_data.py: tests the media datasets of scripts/build_data.py (scripts/data/av_sets.py).

    /usr/bin/python3 scripts/data/check_av_data.py [SOURCE_DIR]

Builds motion_clips, phone_words and video_moves_qa into a temporary folder (the three
that build in seconds; the speech sets take 30-90 s of espeak-ng) and checks what
docs/data.md promises: the manifest's row counts and media count, unique ids, media
paths relative to the TSV's folder that name existing files, each BVH window a complete
file of 256 frames of one CMU capture with its label, each clip 8 frames of 96x96 (for a
sample, by ffprobe), answers and phonemes from their closed sets, no word in both
phone_words splits; that a second call is a no-op and that deleting one media file makes
the next call rebuild. Exits 1 with the first failure.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(__file__), "..", ".."))
BUILDER = os.path.join(SRC, "scripts", "build_data.py")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def build(name, out):
    r = subprocess.run(["/usr/bin/python3", BUILDER, name, "--out", out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("build_data.py %s exited %d: %s%s" % (name, r.returncode, r.stdout, r.stderr))
    return r.stdout


def rows_of(d, split, ncols):
    rows = []
    with open(os.path.join(d, split + ".tsv"), encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            cells = line.rstrip("\n").split("\t")
            if len(cells) != ncols:
                fail("%s/%s.tsv:%d: %d columns, %d expected" % (d, split, k, len(cells), ncols))
            rows.append(cells)
    return rows


def check_common(out, name):
    """Manifest against the files; returns (manifest, {split: rows})."""
    d = os.path.join(out, name)
    m = json.load(open(os.path.join(d, "manifest.json"), encoding="utf-8"))
    if m["name"] != name or m["columns"][0] != "id":
        fail("%s: manifest name/columns %s %s" % (name, m["name"], m["columns"]))
    rows, ids = {}, set()
    for split, info in m["splits"].items():
        rows[split] = rows_of(d, split, len(m["columns"]))
        if len(rows[split]) != info["rows"]:
            fail("%s %s: %d rows, manifest says %d" % (name, split, len(rows[split]), info["rows"]))
        for r in rows[split]:
            if r[0] in ids:
                fail("%s: id %s twice" % (name, r[0]))
            ids.add(r[0])
    if "media" in m:
        n = sum(len(fs) for _, _, fs in os.walk(os.path.join(d, m["media"]["dir"])))
        if n != m["media"]["files"]:
            fail("%s: %d media files, manifest says %d" % (name, n, m["media"]["files"]))
        col = 1
        for split, rs in rows.items():
            for r in rs:
                p = r[col]
                if os.path.isabs(p) or ".." in p.split("/") or not p.startswith(m["media"]["dir"] + "/"):
                    fail("%s: media path %r is not relative to the TSV's folder" % (name, p))
                if not os.path.isfile(os.path.join(d, p)):
                    fail("%s: %s names no file" % (name, p))
    return m, rows


def check_motion(out):
    m, rows = check_common(out, "motion_clips")
    d = os.path.join(out, "motion_clips")
    labels = {"subject one trial one", "subject one trial three"}
    for split, rs in rows.items():
        seen = {}
        for r in rs:
            if r[2] not in labels:
                fail("motion_clips: label %r" % r[2])
            seen[r[2]] = seen.get(r[2], 0) + 1
            text = open(os.path.join(d, r[1]), encoding="ascii").read()
            if not text.startswith("HIERARCHY\nROOT Hips") or "\nFrames: 256\n" not in text:
                fail("motion_clips: %s is not a 256-frame BVH" % r[1])
            body = text.split("Frame Time:", 1)[1].split("\n")[1:]
            frames = [l for l in body if l.strip()]
            nch = sum(int(x) for x in re.findall(r"CHANNELS (\d+)", text))
            if len(frames) != 256 or any(len(l.split()) != nch for l in frames[:3] + frames[-3:]):
                fail("motion_clips: %s has %d frame lines of %d channels" % (r[1], len(frames), nch))
            if ("01_01" in r[1]) != (r[2] == "subject one trial one"):
                fail("motion_clips: %s labelled %r" % (r[1], r[2]))
        if len(set(seen.values())) != 1:
            fail("motion_clips %s: unbalanced labels %s" % (split, seen))
    print("ok: motion_clips: %s" % {k: len(v) for k, v in rows.items()})


def check_phone(out):
    m, rows = check_common(out, "phone_words")
    words = {}
    for split, rs in rows.items():
        for r in rs:
            w, letters, ph = r[1], r[2], r[3]
            if not re.fullmatch(r"[a-z]{3,8}", w) or letters != " ".join(w):
                fail("phone_words: word %r spelt %r" % (w, letters))
            if not ph or any(c.isascii() and c.isupper() for c in ph) or "  " in ph:
                fail("phone_words: phonemes %r of %r" % (ph, w))
            words.setdefault(split, set()).add(w)
    if words["train"] & words["valid"]:
        fail("phone_words: words in both splits: %s" % sorted(words["train"] & words["valid"])[:5])
    print("ok: phone_words: %s, no word in both splits" % {k: len(v) for k, v in rows.items()})


def check_video(out):
    m, rows = check_common(out, "video_moves_qa")
    d = os.path.join(out, "video_moves_qa")
    dirs = {"right", "left", "up", "down"}
    names = {"koala", "zebra", "pig", "frog", "duck", "car", "balloon", "teapot"}
    for split, rs in rows.items():
        for r in rs:
            q, a = r[2], r[3]
            mq = re.fullmatch(r"which way does the (\w+) move\?", q)
            if not ((mq and mq.group(1) in names and a in dirs) or
                    (q == "what moves in the video?" and a in names)):
                fail("video_moves_qa: %r -> %r" % (q, a))
        for r in rs[:3] + rs[-2:]:
            p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v",
                                "-show_entries", "stream=nb_read_frames,width,height",
                                "-of", "csv=p=0", os.path.join(d, r[1])],
                               capture_output=True, text=True)
            if p.returncode != 0 or p.stdout.strip() != "96,96,8":
                fail("video_moves_qa: %s: ffprobe says %r %s" % (r[1], p.stdout, p.stderr))
    print("ok: video_moves_qa: %s, sample clips 96x96 x 8 frames" % {k: len(v) for k, v in rows.items()})


def main():
    with tempfile.TemporaryDirectory(prefix="ofa-avdata-") as out:
        for name in ("motion_clips", "phone_words", "video_moves_qa"):
            build(name, out)
        check_motion(out)
        check_phone(out)
        check_video(out)
        # Idempotent: a second call changes nothing.
        if "up to date" not in build("motion_clips", out):
            fail("motion_clips: a second build was not a no-op")
        # A deleted media file makes the dataset out of date.
        d = os.path.join(out, "motion_clips")
        victim = rows_of(d, "valid", 3)[0][1]
        os.remove(os.path.join(d, victim))
        if "wrote" not in build("motion_clips", out):
            fail("motion_clips: not rebuilt after %s was deleted" % victim)
        check_motion(out)
        print("ok: idempotent, and rebuilt when a media file is missing")


if __name__ == "__main__":
    main()
