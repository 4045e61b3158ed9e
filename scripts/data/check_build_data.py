#!/usr/bin/python3
"""check_build_data.py: tests scripts/build_data.py and the committed fixtures.

    /usr/bin/python3 scripts/data/check_build_data.py [SOURCE_DIR]

Builds every dataset into a temporary folder and checks what docs/data.md promises: the
row counts the manifest records, the column layout, URL-safe base64 of 96x96 JPEGs,
unique ids, captions and answers from the documented closed sets, boxes inside the
image; that a second call is a no-op, that the same seed gives the same bytes and another
seed other bytes; and that tests/data/stamps_caption_small.tsv has its three bad rows
where tests/data/README.md says, and only those. Exits 1 with the first failure.
"""

import base64
import binascii
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from PIL import Image

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(__file__), "..", ".."))
BUILDER = os.path.join(SRC, "scripts", "build_data.py")
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the middle"]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(*args):
    t0 = time.time()
    p = subprocess.run([sys.executable, BUILDER] + list(args), capture_output=True, text=True)
    if p.returncode != 0:
        fail("build_data.py %s exited %d: %s" % (" ".join(args), p.returncode, p.stderr))
    return p.stdout, time.time() - t0


def strict_b64(s):
    """Decode URL-safe base64 strictly: any character outside the alphabet fails."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", s) or len(s) % 4:
        raise ValueError("not URL-safe base64")
    return base64.urlsafe_b64decode(s)


def check_image(cell, where):
    try:
        im = Image.open(io.BytesIO(strict_b64(cell)))
        im.load()
    except (ValueError, OSError, binascii.Error) as e:
        fail("%s: image does not decode: %s" % (where, e))
    if im.format != "JPEG" or im.size != (96, 96):
        fail("%s: expected a 96x96 JPEG, got %s %s" % (where, im.format, im.size))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_dataset(out, name):
    d = os.path.join(out, name)
    with open(os.path.join(d, "manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    if m.get("magic") != "OFADATA" or m.get("name") != name or m.get("seed") != 1:
        fail("%s: manifest header wrong: %r" % (name, {k: m.get(k) for k in
                                                       ("magic", "name", "seed")}))
    ncol = len(m["columns"])
    stamp_phrases = {s["phrase"] for s in m["stamps"]}
    stamp_names = {s["name"] for s in m["stamps"]}
    if not 24 <= len(stamp_phrases) <= 40:
        fail("%s: %d stamps" % (name, len(stamp_phrases)))
    if not m["sources"] or not all(s.get("license") and s.get("version") for s in m["sources"]):
        fail("%s: sources lack a license or version: %r" % (name, m["sources"]))
    ids, answers = set(), set()
    for split, info in m["splits"].items():
        path = os.path.join(d, info["file"])
        with open(path, encoding="utf-8") as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
        if len(rows) != info["rows"] or sha256(path) != info["sha256"]:
            fail("%s/%s: manifest says %d rows, file has %d (or sha256 differs)"
                 % (name, split, info["rows"], len(rows)))
        lo, hi = (2000, 3000) if split == "train" else (150, 300)
        if not lo <= len(rows) <= hi:
            fail("%s/%s: %d rows, expected %d-%d" % (name, split, len(rows), lo, hi))
        for i, r in enumerate(rows):
            where = "%s/%s line %d" % (name, split, i + 1)
            if len(r) != ncol:
                fail("%s: %d columns, expected %d" % (where, len(r), ncol))
            if not r[0].isdigit() or r[0] in ids:
                fail("%s: id %r not a new integer" % (where, r[0]))
            ids.add(r[0])
            if i % 17 == 0:    # decoding every image is slow; a spread sample is enough
                check_image(r[1], where)
            if name == "stamps_caption":
                mm = re.fullmatch(r"(a|an) (.+) (%s)" % "|".join(PLACES), r[2])
                if not mm or mm.group(2) not in stamp_phrases:
                    fail("%s: caption %r not ARTICLE PHRASE PLACE" % (where, r[2]))
            elif name == "stamps_vqa":
                answers.add(r[3])
                if not r[2].endswith("?"):
                    fail("%s: question %r" % (where, r[2]))
            elif name == "stamps_ground":
                b = [int(v) for v in r[3].split(",")]
                if len(b) != 4 or not (0 <= b[0] < b[2] <= 96 and 0 <= b[1] < b[3] <= 96):
                    fail("%s: box %r outside the image" % (where, r[3]))
                if r[2].split(" ", 1)[1] not in stamp_phrases:
                    fail("%s: text %r is not a stamp" % (where, r[2]))
    if name == "stamps_vqa":
        allowed = stamp_names | {"left", "right", "top", "bottom", "middle", "yes", "no"}
        if not answers <= allowed or len(answers) >= 50:
            fail("stamps_vqa: answers %r" % sorted(answers - allowed))
    print("ok %s: %s" % (name, ", ".join("%s %d" % (k, v["rows"])
                                         for k, v in m["splits"].items())))
    return m


def check_fixtures():
    tsv = os.path.join(SRC, "tests", "data", "stamps_caption_small.tsv")
    with open(tsv, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    if len(rows) != 40:
        fail("%s: %d rows, expected 40" % (tsv, len(rows)))
    bad = {}
    for i, r in enumerate(rows):
        if len(r) != 3:
            bad[i] = "columns"
            continue
        try:
            raw = strict_b64(r[1])
        except (ValueError, binascii.Error):
            bad[i] = "base64"
            continue
        try:
            im = Image.open(io.BytesIO(raw))
            im.load()
        except OSError:
            bad[i] = "jpeg"
    # The photo fixtures: these decode, and these must not.
    d = os.path.join(SRC, "tests", "data")
    for f, ok in (("astronaut_96.jpg", True), ("fruits_161x97.jpg", True),
                  ("coffee_gray_120x80.jpg", True), ("rocket_progressive_96x64.jpg", True),
                  ("fruits_truncated.jpg", False), ("fruits_bad_huffman.jpg", False)):
        try:
            with Image.open(os.path.join(d, f)) as im:
                im.load()
            decoded = True
        except OSError:
            decoded = False
        if decoded != ok:
            fail("tests/data/%s: %s" % (f, "does not decode" if ok else "decodes"))
    want = {7: "jpeg", 19: "columns", 31: "base64"}
    if bad != want:
        fail("%s: bad rows %r, tests/data/README.md documents %r" % (tsv, bad, want))
    size = sum(os.path.getsize(os.path.join(SRC, "tests", "data", f))
               for f in os.listdir(os.path.join(SRC, "tests", "data"))
               if os.path.isfile(os.path.join(SRC, "tests", "data", f)))
    print("ok fixtures: bad rows %r; top-level fixture files %d bytes" % (bad, size))


def main():
    with tempfile.TemporaryDirectory(prefix="ofa_data_") as tmp:
        out1, out2 = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        for name in ("stamps_caption", "stamps_vqa", "stamps_ground"):
            _, secs = run(name, "--out", out1)
            if secs > 60:
                fail("%s took %.1f s (> 60 s)" % (name, secs))
            m = check_dataset(out1, name)
            text, secs = run(name, "--out", out1)
            if "up to date" not in text or secs > 5:
                fail("%s: second call rebuilt (%.1f s): %s" % (name, secs, text))
        # Same seed, other folder: same bytes. Other seed: other bytes.
        run("stamps_caption", "--out", out2)
        a = os.path.join(out1, "stamps_caption", "train.tsv")
        b = os.path.join(out2, "stamps_caption", "train.tsv")
        if sha256(a) != sha256(b):
            fail("seed 1 twice gave different train.tsv")
        run("stamps_caption", "--out", out2, "--seed", "2")
        if sha256(a) == sha256(b):
            fail("seed 2 gave the same train.tsv as seed 1")
        p = subprocess.run([sys.executable, BUILDER, "no_such_dataset"], capture_output=True,
                           text=True)
        if p.returncode == 0 or "unknown dataset" not in p.stderr:
            fail("an unknown dataset name was not refused: %r" % p.stderr)
        print("ok idempotent, deterministic, refuses unknown names")
    check_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
