#!/usr/bin/python3
"""build_data.py: builds the project's small real datasets from Debian packages.

    /usr/bin/python3 scripts/build_data.py NAME [--out data] [--seed 1] [--force]
    /usr/bin/python3 scripts/build_data.py --fixtures tests/data
    /usr/bin/python3 scripts/build_data.py --list

Nothing is downloaded: every pixel comes from packages installed by scripts/setup.sh
(tuxpaint-stamps-default, opencv-doc, python3-skimage). Each dataset is written as
OUT/NAME/train.tsv, OUT/NAME/valid.tsv and OUT/NAME/manifest.json, in OFA's TSV layout
(no header; images as URL-safe base64 of a JPEG). docs/data.md documents the columns.

The output is a pure function of (NAME, seed, BUILDER_VERSION, package contents): the
one random generator is seeded from the seed and the dataset name, and rows are written
in generation order. A second call with the same seed finds the manifest and returns at
once; the manifest is written last, so an interrupted build is simply redone.

It needs python3-pil and python3-numpy from Debian, hence /usr/bin/python3.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import time

from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
import text_sets  # noqa: E402  (scripts/data/text_sets.py: the text datasets)
import av_sets  # noqa: E402  (scripts/data/av_sets.py: speech, video, motion, phone)

# Bump when the output of any builder changes, so that old data is rebuilt.
BUILDER_VERSION = 4
MANIFEST_MAGIC = "OFADATA"

STAMP_DIR = "/usr/share/tuxpaint/stamps"
OPENCV_DIR = "/usr/share/doc/opencv-doc/examples/data"
SKIMAGE_DIR = "/usr/lib/python3/dist-packages/skimage/data"

IMG_SIZE = 96          # the nano/tiny input size (DESIGN.md: 96 px / 16)
JPEG_QUALITY = 90
# Backgrounds are real photos, but muted (Gaussian blur, contrast scaled towards the
# mean grey) so that the stamp is what a small model sees first. Measured with a
# nano-sized patch transformer (d=64, 2 layers, 16 px patches, 1 CPU thread, 60 s) on
# validation composites over held-out photos: raw photos gave 41% object / 25% place
# accuracy (it learns the backgrounds); blur 2 + contrast 0.35 gave 76% / 82%.
BG_BLUR = 2.0
BG_CONTRAST = 0.35
# The longer side of a stamp, in pixels of the 96 px image.
STAMP_MIN, STAMP_MAX = 44, 56

# The stamp set: K cut-out photos with distinct, short English captions. The second
# field is the short name a VQA answer uses (one or two words); the caption's noun
# phrase comes from the stamp's own NAME.txt (see stamp_noun_phrase). Cartoon stamps
# are left out on purpose: they are drawings, the backgrounds are photos, and a model
# would learn "drawing vs photo" instead of the object.
STAMPS = [
    ("food/vegetables/garlics", "garlic"),
    ("food/fruit/banana", "banana"),
    ("food/fruit/pineapple", "pineapple"),
    ("food/fruit/apple_red", "apple"),
    ("food/fruit/lemon", "lemon"),
    ("food/vegetables/carrot", "carrot"),
    ("food/fruit/grapes", "grapes"),
    ("animals/marsupials/koala", "koala"),
    ("animals/mammals/equines/zebra", "zebra"),
    ("animals/mammals/pig", "pig"),
    ("animals/amphibians/frog", "frog"),
    ("animals/mammals/aquatic/dolphin", "dolphin"),
    ("animals/mammals/equines/horse", "horse"),
    ("household/rubberduck", "duck"),
    ("household/dishes/teapot", "teapot"),
    ("household/tools/hammer", "hammer"),
    ("household/key", "key"),
    ("household/Lightbulb", "lightbulb"),
    ("vehicles/auto/sedan", "car"),
    ("vehicles/garbagetruck", "truck"),
    ("vehicles/flight/balloon360", "balloon"),
    ("vehicles/flight/planes/747", "airplane"),
    ("sports/basketball", "basketball"),
    ("sports/tennis_racket", "racket"),
    ("hobbies/music/string/violin", "violin"),
    ("hobbies/music/brass/trumpet", "trumpet"),
    ("hobbies/camera_35mm", "camera"),
    ("clothes/hats/sombrero", "sombrero"),
    ("town/roadsigns/traffic_cone", "cone"),
    ("plants/flowers/rose", "rose"),
    ("hobbies/binoculars", "binoculars"),
    ("food/vegetables/mushroom", "mushroom"),
]

# Background photos. Validation composites use photos that no training composite uses,
# so "new backgrounds" is literally true. Paths are relative to their package folder.
TRAIN_PHOTOS = [
    (OPENCV_DIR, "aero1.jpg"), (OPENCV_DIR, "baboon.jpg"), (OPENCV_DIR, "building.jpg"),
    (OPENCV_DIR, "butterfly.jpg"), (OPENCV_DIR, "fruits.jpg"), (OPENCV_DIR, "home.jpg"),
    (OPENCV_DIR, "leuvenA.jpg"), (OPENCV_DIR, "messi5.jpg"), (OPENCV_DIR, "orange.jpg"),
    (OPENCV_DIR, "starry_night.jpg"), (OPENCV_DIR, "stuff.jpg"), (OPENCV_DIR, "graf1.png"),
    (OPENCV_DIR, "board.jpg"), (OPENCV_DIR, "HappyFish.jpg"), (OPENCV_DIR, "left01.jpg"),
    (SKIMAGE_DIR, "astronaut.png"), (SKIMAGE_DIR, "chelsea.png"), (SKIMAGE_DIR, "coffee.png"),
    (SKIMAGE_DIR, "rocket.jpg"), (SKIMAGE_DIR, "motorcycle_left.png"),
    (SKIMAGE_DIR, "grass.png"), (SKIMAGE_DIR, "gravel.png"), (SKIMAGE_DIR, "camera.png"),
]
VALID_PHOTOS = [
    (OPENCV_DIR, "aero3.jpg"), (OPENCV_DIR, "leuvenB.jpg"), (OPENCV_DIR, "apple.jpg"),
    (OPENCV_DIR, "squirrel_cls.jpg"), (SKIMAGE_DIR, "brick.png"),
    (SKIMAGE_DIR, "hubble_deep_field.jpg"),
]

# Where a stamp can be: the phrase a caption ends with, the one-word VQA answer, and
# the stamp's centre as a fraction of the image side. Five well-separated places keep
# the position part of a caption learnable from 96 px.
PLACES = [
    ("on the left", "left", (0.25, 0.50)),
    ("on the right", "right", (0.75, 0.50)),
    ("at the top", "top", (0.50, 0.25)),
    ("at the bottom", "bottom", (0.50, 0.75)),
    ("in the middle", "middle", (0.50, 0.50)),
]

SOURCES = {
    "tuxpaint-stamps-default": {
        "license": "GPL-2",
        "copyright": "/usr/share/doc/tuxpaint-stamps-default/copyright",
        "used": "cut-out photo stamps (PNG with alpha) and their English captions (NAME.txt)",
    },
    "opencv-doc": {
        "license": "Apache-2.0 AND BSD-3-Clause (Files: *)",
        "copyright": "/usr/share/doc/opencv-doc/copyright",
        "used": "example photos under examples/data, cropped as backgrounds",
    },
    "python3-skimage": {
        "license": "BSD-3-Clause (Files: *; per-image notes in skimage/data/__init__.py)",
        "copyright": "/usr/share/doc/python3-skimage/copyright",
        "used": "sample photos under skimage/data, cropped as backgrounds",
    },
    "debian-archive-descriptions": {
        "license": ("each description is part of its package's debian/control and under "
                    "that package's license (Debian main: DFSG-free)"),
        "copyright": "/usr/share/doc/PACKAGE/copyright of each package named",
        "used": ("apt's index lists for bookworm main: Translation-en (short and long "
                 "English descriptions; apt-get update -o Acquire::Languages=en) and "
                 "Packages (sections)"),
    },
    "wordnet-base": {
        "license": "WordNet 3.0 license (BSD-like, Princeton University)",
        "copyright": "/usr/share/doc/wordnet-base/copyright",
        "used": "synsets, glosses and example sentences of /usr/share/wordnet/data.*",
    },
    "miscfiles": {
        "license": "GPL-2 and public domain (per file; see the copyright file)",
        "copyright": "/usr/share/doc/miscfiles/copyright",
        "used": "the tables /usr/share/misc/cities.dat.gz (491 cities) and countries.gz",
    },
    "asterisk-core-sounds-en-wav": {
        "license": "CC-BY-SA-3.0 (Allison Smith's recordings for Digium; see the copyright file)",
        "copyright": "/usr/share/doc/asterisk-core-sounds-en-wav/copyright",
        "used": ("recorded English prompts (one speaker, 8 kHz WAV) and their transcripts "
                 "(asterisk-core-sounds-en: core-sounds-en.txt.gz), joined by name"),
    },
    "espeak-ng": {
        "license": "GPL-3+",
        "copyright": "/usr/share/doc/espeak-ng-data/copyright",
        "used": "speech synthesized from text (several voices and speeds); phonemes in IPA (--ipa)",
    },
    "ffmpeg": {
        "license": "GPL-2+ / LGPL-2.1+ (the program; clips are made of the stamps and photos)",
        "copyright": "/usr/share/doc/ffmpeg/copyright",
        "used": "clips composed with the overlay filter (moving positions), encoded with libx264",
    },
    "assimp-testmodels": {
        "license": ("CMU Graphics Lab Motion Capture Database: free for research and "
                    "commercial use (BVH conversion by B. Hahne, no added restriction)"),
        "copyright": "/usr/share/assimp/models/BVH/01_nn.bvh.source.txt",
        "used": "the CMU captures 01_01.bvh and 01_03.bvh (31 joints, 120 fps)",
    },
    "miscfiles-web2": {
        "license": "public domain (Webster's Second International, 1934; see miscfiles' copyright)",
        "copyright": "/usr/share/doc/miscfiles/copyright",
        "used": "English words of /usr/share/dict/web2",
    },
    "generated": {
        "license": "none needed (made by scripts/data/text_sets.py)",
        "copyright": "",
        "used": "4x4 sudoku puzzles from a random grid and a uniqueness-checking solver",
    },
}


class DataError(Exception):
    """A source file is missing or unusable: the message names it."""


text_sets.DataError = DataError
av_sets.DataError = DataError


# ---------------------------------------------------------------- small helpers

def b64_jpeg(img, quality=JPEG_QUALITY):
    """JPEG-encode a PIL image and return OFA's URL-safe base64 text (with padding)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return base64.urlsafe_b64encode(buf.getvalue()).decode("ascii"), buf.getvalue()


def tsv_field(s):
    """TSV has no quoting in OFA's files: a tab or newline inside a field would shift
    every later column, so refuse it rather than write a broken row."""
    if "\t" in s or "\n" in s or "\r" in s:
        raise DataError("field contains a tab or newline: %r" % s[:60])
    return s


def write_tsv(path, rows):
    """Write rows (lists of str) atomically; returns the sha256 of the file."""
    tmp = path + ".tmp"
    h = hashlib.sha256()
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            line = "\t".join(tsv_field(c) for c in r) + "\n"
            h.update(line.encode("utf-8"))
            f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return h.hexdigest()


def write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pkg_version(pkg):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                             capture_output=True, text=True, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def seeded_rng(name, seed, split):
    """One generator per (dataset, seed, split): hashing the triple (rather than using
    seed+k) keeps the splits independent and stable when datasets are added."""
    digest = hashlib.sha256(("%s/%d/%s" % (name, seed, split)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------- sources

def stamp_noun_phrase(caption):
    """Shorten a stamp's one-line caption to (article, noun phrase).

    "A string of garlic." -> ("a", "string of garlic"); "An airplane." -> ("an",
    "airplane"). The first sentence is kept, quotes and punctuation go, and the leading
    article is split off so captions can say "a string of garlic on the left"."""
    first = re.split(r"[.!?]", caption.strip(), maxsplit=1)[0]
    first = re.sub(r"[\"“”‘’]", "", first).strip().lower()
    words = first.split()
    if not words:
        raise DataError("empty caption")
    article = "a"
    if words[0] in ("a", "an", "the", "some"):
        article, words = words[0], words[1:]
    if not 1 <= len(words) <= 4 or not all(re.fullmatch(r"[a-z]+", w) for w in words):
        raise DataError("caption %r is not a short noun phrase" % caption)
    return article, " ".join(words)


def load_stamps():
    """Load every stamp of STAMPS as RGBA, cropped to its opaque part."""
    out = []
    for rel, name in STAMPS:
        png = os.path.join(STAMP_DIR, rel + ".png")
        txt = os.path.join(STAMP_DIR, rel + ".txt")
        if not os.path.exists(png) or not os.path.exists(txt):
            raise DataError("%s: stamp missing (is tuxpaint-stamps-default installed?)" % png)
        with open(txt, encoding="utf-8") as f:
            caption = f.readline().strip()
        try:
            article, np_ = stamp_noun_phrase(caption)
        except DataError as e:
            raise DataError("%s: %s" % (txt, e))
        img = Image.open(png).convert("RGBA")
        bbox = img.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
        if bbox is None:
            raise DataError("%s: stamp is fully transparent" % png)
        out.append({"file": rel + ".png", "caption": caption, "article": article,
                    "phrase": np_, "name": name, "img": img.crop(bbox)})
    names = [s["name"] for s in out]
    phrases = [s["phrase"] for s in out]
    check(len(set(names)) == len(names), "stamp names are not distinct")
    check(len(set(phrases)) == len(phrases), "stamp phrases are not distinct")
    return out


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def load_photos(entries):
    """Load background photos as RGB, shrunk so the longer side is at most 512 px
    (crops are resized to 96 px anyway; this keeps the build fast)."""
    out = []
    for d, f in entries:
        p = os.path.join(d, f)
        if not os.path.exists(p):
            raise DataError("%s: photo missing (are opencv-doc and python3-skimage installed?)" % p)
        img = Image.open(p).convert("RGB")
        scale = 512.0 / max(img.size)
        if scale < 1:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.BILINEAR)
        out.append({"file": p, "img": img})
    return out


# ---------------------------------------------------------------- composites

def random_background(rng, photos):
    """A random square crop (30-100% of the shorter side) of a random photo, at 96 px."""
    ph = rng.choice(photos)["img"]
    side = min(ph.size)
    s = max(16, int(side * rng.uniform(0.3, 1.0)))
    x = rng.randint(0, ph.width - s)
    y = rng.randint(0, ph.height - s)
    bg = ph.crop((x, y, x + s, y + s)).resize((IMG_SIZE, IMG_SIZE), Image.BILINEAR)
    if rng.random() < 0.5:
        bg = bg.transpose(Image.FLIP_LEFT_RIGHT)
    if BG_BLUR > 0:
        bg = bg.filter(ImageFilter.GaussianBlur(BG_BLUR))
    if BG_CONTRAST != 1:
        bg = ImageEnhance.Contrast(bg).enhance(BG_CONTRAST)
    return bg


def paste_stamp(rng, bg, stamp, place):
    """Paste one stamp on bg (in place) at one of PLACES. Returns its box (x0, y0, x1,
    y1) in pixels of the 96 px image; the stamp is always wholly inside."""
    st = stamp["img"]
    if rng.random() < 0.5:
        st = st.transpose(Image.FLIP_LEFT_RIGHT)   # a mirrored koala is still a koala
    # Big enough to recognise at 96 px; the five places still differ by >= 20 px.
    target = rng.randint(STAMP_MIN, STAMP_MAX)
    scale = target / max(st.size)
    w, h = max(4, round(st.width * scale)), max(4, round(st.height * scale))
    st = st.resize((w, h), Image.LANCZOS)
    fx, fy = place[2]
    jitter = 5
    cx = round(fx * IMG_SIZE) + rng.randint(-jitter, jitter)
    cy = round(fy * IMG_SIZE) + rng.randint(-jitter, jitter)
    # Keep the stamp inside the image (a half-visible stamp would make "where" ambiguous).
    x0 = min(max(cx - w // 2, 0), IMG_SIZE - w)
    y0 = min(max(cy - h // 2, 0), IMG_SIZE - h)
    bg.paste(st, (x0, y0), st)
    return (x0, y0, x0 + w, y0 + h)


def compose(rng, photos, stamp, place):
    """A new background with one stamp at one of PLACES. Returns (image, box)."""
    bg = random_background(rng, photos)
    return bg, paste_stamp(rng, bg, stamp, place)


def composite_plan(rng, stamps, n):
    """The (stamp, place) of each of n composites: every pair appears equally often
    (balanced classes make the constant-caption baseline honest), in shuffled order."""
    pairs = [(si, pi) for si in range(len(stamps)) for pi in range(len(PLACES))]
    out = []
    while len(out) < n:
        block = pairs[:]
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


# ---------------------------------------------------------------- datasets

def build_stamps_caption(name, seed, stamps, splits):
    """Rows: id, img, cap. cap = "<article> <noun phrase> <place phrase>"."""
    result = {}
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            st, pl = stamps[si], PLACES[pi]
            img, _box = compose(rng, photos, st, pl)
            b64, _ = b64_jpeg(img)
            cap = "%s %s %s" % (st["article"], st["phrase"], pl[0])
            rows.append([str(id0 + i), b64, cap])
        result[split] = rows
    return result


def build_stamps_vqa(name, seed, stamps, splits):
    """Rows: id, image, question, answer. One question per composite, drawn as
    what (40%), where (40%), is-there (20%, half of them about an absent stamp)."""
    result = {}
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            st, pl = stamps[si], PLACES[pi]
            img, _box = compose(rng, photos, st, pl)
            b64, _ = b64_jpeg(img)
            r = rng.random()
            if r < 0.4:
                q, a = "what is in the image?", st["name"]
            elif r < 0.8:
                q, a = "where is the %s?" % st["name"], pl[1]
            else:
                if rng.random() < 0.5:
                    q, a = "is there a %s in the image?" % st["name"], "yes"
                else:
                    other = stamps[(si + rng.randint(1, len(stamps) - 1)) % len(stamps)]
                    q, a = "is there a %s in the image?" % other["name"], "no"
            rows.append([str(id0 + i), b64, q, a])
        result[split] = rows
    return result


def build_stamps_ground(name, seed, stamps, splits):
    """Rows: id, img, cap, patch_boxes (the refcoco preset's columns). Two different
    stamps at two different places; cap names one of them ("a string of garlic") and
    patch_boxes is where it is, "x0,y0,x1,y1" in pixels of the 96x96 image (OFA's
    refcoco layout). The named stamp is pasted last, so it is never covered."""
    result = {}
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            sj = (si + rng.randint(1, len(stamps) - 1)) % len(stamps)
            pj = (pi + rng.randint(1, len(PLACES) - 1)) % len(PLACES)
            bg = random_background(rng, photos)
            paste_stamp(rng, bg, stamps[sj], PLACES[pj])
            box = paste_stamp(rng, bg, stamps[si], PLACES[pi])
            b64, _ = b64_jpeg(bg)
            text = "%s %s" % (stamps[si]["article"], stamps[si]["phrase"])
            rows.append([str(id0 + i), b64, text, "%d,%d,%d,%d" % box])
        result[split] = rows
    return result


def build_image_classify(name, seed, stamps, splits):
    """Rows: id, image, label_name. One stamp on a background at a random place;
    label_name is the stamp's short name (its class; every class equally often)."""
    result = {}
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            img, _box = compose(rng, photos, stamps[si], PLACES[pi])
            b64, _ = b64_jpeg(img)
            rows.append([str(id0 + i), b64, stamps[si]["name"]])
        result[split] = rows
    return result


# Statements about a stamp that no picture can settle: the neutral hypotheses of
# snli_ve ("maybe"). {n} is the stamp's short name.
NEUTRAL_HYPS = [
    "the {n} belongs to a child",
    "the {n} was bought yesterday",
    "the {n} is a present",
    "someone is about to pick up the {n}",
    "the {n} is brand new",
    "the {n} was made in a factory far away",
]


def build_snli_ve(name, seed, stamps, splits):
    """Rows: id, img, cap, hyp, label. The image holds one stamp at one of PLACES; cap is
    the stamp's own description shortened to its noun phrase (true, but silent about the
    place); hyp is, in equal shares, a true statement about where the stamp is (yes), a
    false one (another place: no), or one the picture cannot settle (maybe). yes and no
    need the image: cap does not say where the stamp is."""
    result = {}
    labels = ["yes", "no", "maybe"]
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            st, pl = stamps[si], PLACES[pi]
            img, _box = compose(rng, photos, st, pl)
            b64, _ = b64_jpeg(img)
            label = labels[(i + rng.randint(0, 2)) % 3]
            if label == "yes":
                hyp = rng.choice(["the %s is %s", "there is a %s %s"]) % (st["name"], pl[0])
            elif label == "no":
                other = PLACES[(pi + rng.randint(1, len(PLACES) - 1)) % len(PLACES)]
                hyp = rng.choice(["the %s is %s", "there is a %s %s"]) % (st["name"], other[0])
            else:
                hyp = rng.choice(NEUTRAL_HYPS).format(n=st["name"])
            cap = "%s %s" % (st["article"], st["phrase"])
            rows.append([str(id0 + i), b64, cap, hyp, label])
        result[split] = rows
    return result


def build_object_detection(name, seed, stamps, splits):
    """Rows: id, img, objects. Two or three different stamps at different places (none
    covers another's centre place: PLACES are 24 px apart, stamps 44-56 px, so boxes may
    overlap at their edges; later stamps are pasted on top). objects lists every stamp
    as OFA's detection layout writes it: "x0,y0,x1,y1,class_id,class_name" joined by
    "&&", boxes in pixels of the 96x96 image, class_id the stamp's index in STAMPS."""
    result = {}
    for split, (photos, n, id0) in splits.items():
        rng = seeded_rng(name, seed, split)
        rows = []
        for i, (si, pi) in enumerate(composite_plan(rng, stamps, n)):
            k = rng.choice([2, 3])
            sts = [si] + rng.sample([j for j in range(len(stamps)) if j != si], k - 1)
            # Left/right/top/bottom only: "middle" overlaps all four at this stamp size.
            places = [pi if pi < 4 else rng.randint(0, 3)]
            places += rng.sample([p for p in range(4) if p != places[0]], k - 1)
            bg = random_background(rng, photos)
            objs = []
            for s_, p_ in zip(sts, places):
                box = paste_stamp(rng, bg, stamps[s_], PLACES[p_])
                objs.append("%d,%d,%d,%d,%d,%s" % (box + (s_, stamps[s_]["name"])))
            b64, _ = b64_jpeg(bg)
            rows.append([str(id0 + i), b64, "&&".join(objs)])
        result[split] = rows
    return result


DATASETS = {
    "stamps_caption": {
        "builder": build_stamps_caption,
        "columns": ["id", "img", "cap"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Each row is a new 96x96 composite: a random square crop of a background "
                "photo (train and valid use disjoint photos), with one of %d tuxpaint "
                "cut-out photo stamps pasted at one of 5 places (left, right, top, bottom, "
                "middle; +-5 px jitter), longer side %d-%d px, mirrored at random. Every "
                "(stamp, place) pair occurs equally often. The caption is the stamp's own "
                "English caption shortened to its noun phrase, plus the place phrase. "
                "The background crop is blurred (Gaussian, radius %g) and its contrast "
                "scaled by %g. JPEG quality %d, URL-safe base64."
                % (len(STAMPS), STAMP_MIN, STAMP_MAX, BG_BLUR, BG_CONTRAST, JPEG_QUALITY)),
    },
    "stamps_vqa": {
        "builder": build_stamps_vqa,
        "columns": ["id", "image", "question", "answer"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Composites made as in stamps_caption (own random draws). One closed-set "
                "question per image: 'what is in the image?' -> stamp name (40%%), "
                "'where is the NAME?' -> left/right/top/bottom/middle (40%%), "
                "'is there a NAME in the image?' -> yes/no (20%%, half about an absent "
                "stamp). %d stamp names + 5 places + yes/no = %d answers."
                % (len(STAMPS), len(STAMPS) + 7)),
    },
    "stamps_ground": {
        "builder": build_stamps_ground,
        "columns": ["id", "img", "cap", "patch_boxes"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Composites as in stamps_caption but with two different stamps at two "
                "different places (the second pasted on top). cap names the second "
                "stamp (article + noun phrase); patch_boxes is its bounding box of opaque pixels "
                "as 'x0,y0,x1,y1' in pixels of the 96x96 image (x1, y1 exclusive)."),
    },
    "image_classify": {
        "builder": build_image_classify,
        "columns": ["id", "image", "label_name"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Composites made as in stamps_caption (own random draws): one of %d "
                "tuxpaint photo stamps on a background photo crop (train and valid use "
                "disjoint photos). label_name is the stamp's short name, its class; every "
                "class occurs equally often (constant baseline 1/%d)."
                % (len(STAMPS), len(STAMPS))),
    },
    "snli_ve": {
        "builder": build_snli_ve,
        "columns": ["id", "img", "cap", "hyp", "label"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Visual entailment on composites made as in stamps_caption: cap is the "
                "stamp's own description shortened to its noun phrase (true, silent about "
                "the place); hyp is a true statement of where the stamp is (label yes, "
                "OFA's word for entailment), the same with another place (no: "
                "contradiction), or a templated statement the picture cannot settle, e.g. "
                "'the koala is a present' (maybe: neutral), each a third of the rows. yes "
                "and no need the image. Templated hypotheses, not crowd-written ones."),
    },
    "object_detection": {
        "builder": build_object_detection,
        "columns": ["id", "img", "objects"],
        "sizes": {"train": 2560, "valid": 200},
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage"],
        "how": ("Two or three different stamps pasted at different places (left, right, "
                "top, bottom; +-5 px jitter, longer side %d-%d px) on a background photo "
                "crop. objects lists each stamp's bounding box of opaque pixels and class "
                "as OFA's detection data does: 'x0,y0,x1,y1,class_id,class_name' joined "
                "by '&&', pixels of the 96x96 image (x1, y1 exclusive), class_id = the "
                "stamp's index in the manifest's stamp list. Later stamps may cover the "
                "edge of earlier ones; their boxes are still the whole stamp."
                % (STAMP_MIN, STAMP_MAX)),
    },
}


# The text datasets (scripts/data/text_sets.py): text in, text out, no images. Their
# builders take (name, seed, sizes, rng_for) and return (rows, info).
TEXT_DATASETS = {
    "gigaword": {
        "builder": text_sets.build_gigaword,
        "columns": ["id", "src", "tgt"],
        "sizes": {"train": 4000, "valid": 200},
        "sources": ["debian-archive-descriptions"],
        "how": ("Summarization of Debian package descriptions: src is the first "
                "paragraph of a package's English long description (12-60 words), tgt its "
                "one-line short description (2-12 words); lowercase ASCII, URLs removed, "
                "one row per distinct description. Not news: the preset's name is kept, "
                "the text is Debian's."),
    },
    "glue": {
        "builder": text_sets.build_glue,
        "columns": ["id", "sentence", "label"],
        "sizes": {"train": 3000, "valid": 300},
        "sources": ["debian-archive-descriptions"],
        "how": ("Single-sentence classification: sentence is a package's short "
                "description, label its archive section, one of %s, each label equally "
                "often in each split (majority baseline %.3f). Not sentiment: the preset's "
                "instruction asks positive/negative, the labels are sections."
                % (", ".join(text_sets.GLUE_SECTIONS), 1.0 / len(text_sets.GLUE_SECTIONS))),
    },
    "text_infilling": {
        "builder": text_sets.build_text_infilling,
        "columns": ["id", "text"],
        "sizes": {"train": 4000, "valid": 200},
        "sources": ["debian-archive-descriptions"],
        "how": ("The first paragraph of a package's English long description (8-40 "
                "words), lowercase ASCII; the preset masks 30%% of it at training time."),
    },
    "sudoku": {
        "builder": text_sets.build_sudoku,
        "columns": ["id", "src", "tgt"],
        "sizes": {"train": 4000, "valid": 200},
        "sources": ["generated"],
        "how": ("4x4 sudoku (2x2 boxes; 9x9 is too long for a nano model): src is the "
                "puzzle as 'd d d d | d d d d | ...' with 0 for a blank, tgt the solution. "
                "6-10 blanks, each puzzle with exactly one solution (solver-checked); no "
                "puzzle in both splits."),
    },
    "natural_instruction_v2": {
        "builder": text_sets.build_natural_instruction_v2,
        "columns": ["id", "instruction", "examples", "src", "tgt"],
        "sizes": {"train": 4000, "valid": 200},
        "sources": ["wordnet-base"],
        "how": ("Three instruction tasks over WordNet 3.0 synsets: word -> definition, "
                "definition -> word, word -> one of its example sentences; examples holds "
                "one solved example of the same task on another synset. A small stand-in "
                "for Natural Instructions v2 (3 tasks, not 1,600); synsets split by offset."),
    },
    "spider": {
        "builder": text_sets.build_spider,
        "columns": ["id", "src", "database", "tgt"],
        "sizes": {"train": 1600, "valid": 180},
        "sources": ["miscfiles"],
        "how": ("Text to SQL over two real tables (miscfiles' cities and countries): src a "
                "question from one of 12 templates filled with a row's values, database "
                "the two tables' schema, tgt the SQL. Templated questions, not Spider's "
                "human ones; the entity a question names decides its split."),
    },
    "fetaqa": {
        "builder": text_sets.build_fetaqa,
        "columns": ["id", "database", "src", "tgt"],
        "sizes": {"train": 2000, "valid": 200},
        "sources": ["miscfiles"],
        "how": ("Table question answering: database is 3-6 rows of miscfiles' cities table "
                "(name | country | population), src a templated question (population of a "
                "city, its country, the most populous city of the table), tgt a templated "
                "one-sentence answer. The asked-about city decides the split."),
    },
    "dart": {
        "builder": text_sets.build_dart,
        "columns": ["id", "database", "tgt"],
        "sizes": {"train": 2000, "valid": 200},
        "sources": ["miscfiles"],
        "how": ("Triples to text: database is a random subset of one city's or country's "
                "facts from miscfiles' tables as 'subject | relation | object' triples, tgt "
                "a templated sentence stating exactly those facts (DART's are written by "
                "people). Entities split between train and valid."),
    },
}


# The speech, video, motion and phone datasets (scripts/data/av_sets.py): rows name media
# files written beside the TSV (under `media`). Their builders take (name, seed, sizes,
# rng_for, outdir, ctx) and return (rows, info).
AV_DATASETS = {
    "speech_prompts": {
        "builder": av_sets.build_speech_prompts,
        "columns": ["id", "wav", "text"],
        "sizes": {"max_words": 12, "synth_per_prompt": 2},
        "media": "wav",
        "sources": ["asterisk-core-sounds-en-wav", "espeak-ng"],
        "how": ("Speech recognition: asterisk's recorded English prompts (one speaker, "
                "8 kHz) of at most 12 words, joined with their transcripts by name, each "
                "also spoken by 2 espeak-ng voices (22.05 kHz; %s with variants %s, "
                "130-190 words/min). text is the transcript, lowercase, punctuation "
                "removed. Prompts are split by name (10%% valid): valid sentences are "
                "new, and their synthesized copies use held-out voices (%s, variants %s)."
                % (", ".join(av_sets.TRAIN_LANGS), ", ".join(v for v in av_sets.TRAIN_VARIANTS if v),
                   ", ".join(av_sets.VALID_LANGS), ", ".join(av_sets.VALID_VARIANTS))),
    },
    "speech_digits": {
        "builder": av_sets.build_speech_digits,
        "version": 2,
        "columns": ["id", "wav", "text"],
        "sizes": {"train": 3000, "valid": 200, "recorded_share": 0.3},
        "media": "wav",
        "sources": ["asterisk-core-sounds-en-wav", "espeak-ng"],
        "how": ("Spoken digit strings, 1-4 words of zero..nine (text 'four one seven'). "
                "30%% of rows splice asterisk's recordings of the single digits (the one "
                "real speaker, 8 kHz) with 60-250 ms silences; the rest is espeak-ng in "
                "the split's voices (train: %s x variants %s; valid: %s x %s, none of them "
                "in train). Each length equally often; no string of 3 or 4 digits is in both splits."
                % (", ".join(av_sets.TRAIN_LANGS), ", ".join(v or "default" for v in av_sets.TRAIN_VARIANTS),
                   ", ".join(av_sets.VALID_LANGS), ", ".join(av_sets.VALID_VARIANTS))),
    },
    "video_moves_caption": {
        "builder": av_sets.build_video_moves_caption,
        "columns": ["id", "video", "cap"],
        "sizes": {"train": 1280, "valid": 128},
        "media": "clips",
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage", "ffmpeg"],
        "how": ("Clips of 8 frames (8 fps, 96x96, H.264 in MP4) composed by ffmpeg's "
                "overlay filter: one of 8 tuxpaint photo stamps (%s; 34-42 px, mirrored at "
                "random) crosses a muted crop of a real photo (as in stamps_caption; valid "
                "uses held-out photos) moving right, left, up or down at a constant speed. "
                "cap: 'a koala moves right'. Every (object, direction) pair equally often."
                % ", ".join(n for _, n in av_sets.VIDEO_OBJECTS)),
    },
    "video_moves_classify": {
        "builder": av_sets.build_video_moves_classify,
        "columns": ["id", "video", "label_name"],
        "sizes": {"train": 1280, "valid": 128},
        "media": "clips",
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage", "ffmpeg"],
        "how": ("Clips made as in video_moves_caption (own draws); label_name is the "
                "direction of motion: right, left, up or down (balanced: baseline 0.25). "
                "The preset's instruction asks what is in the video; the labels are "
                "directions."),
    },
    "video_moves_qa": {
        "builder": av_sets.build_video_moves_qa,
        "columns": ["id", "video", "question", "answer"],
        "sizes": {"train": 1280, "valid": 128},
        "media": "clips",
        "sources": ["tuxpaint-stamps-default", "opencv-doc", "python3-skimage", "ffmpeg"],
        "how": ("Clips made as in video_moves_caption (own draws), one question each: "
                "'which way does the koala move?' -> right/left/up/down, or 'what moves "
                "in the video?' -> the object's name (8 names): 12 answers."),
    },
    "motion_clips": {
        "builder": av_sets.build_motion_clips,
        "columns": ["id", "bvh", "label"],
        "sizes": {"train": 400, "valid": 80},
        "media": "bvh",
        "sources": ["assimp-testmodels"],
        "how": ("Windows of %d frames (2.1 s at 120 fps) cut from the two CMU captures of "
                "assimp-testmodels (01_01, 01_03: same 31-joint skeleton), each written as "
                "its own BVH file; label names the capture ('subject one trial one' / "
                "'... three'), the only text the files carry. Train windows start in the "
                "first 80%% of a clip, valid windows lie in the last 20%%; equal counts per "
                "clip (baseline 0.5). Honestly small: two captures of one person. "
                "Boxing_Toes.bvh (21 joints, another feature width) is left out."
                % av_sets.MOTION_WINDOW),
    },
    "phone_words": {
        "builder": av_sets.build_phone_words,
        "version": 2,
        "columns": ["id", "text", "letters", "phone"],
        "sizes": {"train": 4000, "valid": 200},
        "media": None,
        "sources": ["miscfiles-web2", "espeak-ng"],
        "how": ("Text to phonemes: text is an English word of 3-8 lowercase letters from "
                "miscfiles' web2 word list, phone its pronunciation as espeak-ng (en-us) "
                "writes it with --ipa: one IPA phoneme per space-separated token, stress "
                "marks on their vowel (\"reading\" -> \"ɹ ˈiː d ɪ ŋ\"); letters is the word "
                "spelt out (\"r e a d i n g\"), one token per letter for the model. Words split "
                "by a hash (5%% to valid). WER over the phone column is the phone error rate."),
    },
}


def manifest_matches(path, name, seed):
    """True when an existing build of NAME with this seed and builder version is
    complete: the manifest is written last, and the split files must still be there
    with the row counts it records."""
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    if (m.get("magic") != MANIFEST_MAGIC or m.get("builder_version") != BUILDER_VERSION
            or m.get("name") != name or m.get("seed") != seed):
        return False
    d = os.path.dirname(path)
    for split, info in m.get("splits", {}).items():
        p = os.path.join(d, info.get("file", ""))
        try:
            with open(p, "rb") as f:
                if sum(1 for _ in f) != info.get("rows"):
                    return False
        except OSError:
            return False
    return True


def build(name, out, seed, force=False):
    spec = DATASETS.get(name) or TEXT_DATASETS.get(name) or AV_DATASETS[name]
    d = os.path.join(out, name)
    mpath = os.path.join(d, "manifest.json")
    if not force and manifest_matches(mpath, name, seed) and av_media_intact(d, name):
        print("%s: up to date (%s)" % (name, mpath))
        return 0
    t0 = time.time()
    os.makedirs(d, exist_ok=True)
    if os.path.exists(mpath):
        os.remove(mpath)   # a half-rebuilt folder must not look complete
    if name in TEXT_DATASETS:
        return build_text(name, d, mpath, seed, t0)
    if name in AV_DATASETS:
        return build_av(name, d, mpath, seed, t0)
    stamps = load_stamps()
    splits = {
        "train": (load_photos(TRAIN_PHOTOS), spec["sizes"]["train"], 0),
        # Validation ids start at 1000000 so that ids are unique over both files.
        "valid": (load_photos(VALID_PHOTOS), spec["sizes"]["valid"], 1000000),
    }
    rows = spec["builder"](name, seed, stamps, splits)
    manifest = {
        "magic": MANIFEST_MAGIC,
        "builder_version": BUILDER_VERSION,
        "name": name,
        "seed": seed,
        "format": "tsv, no header, tab-separated; image columns are URL-safe base64 JPEG",
        "columns": spec["columns"],
        "image_size": [IMG_SIZE, IMG_SIZE],
        "splits": {},
        "sources": [],
        "how": spec["how"],
        "builder": "scripts/build_data.py %s --seed %d" % (name, seed),
        "stamps": [{"file": s["file"], "caption": s["caption"], "phrase": s["phrase"],
                    "name": s["name"]} for s in stamps],
        "background_photos": {"train": [os.path.join(d_, p) for d_, p in TRAIN_PHOTOS],
                              "valid": [os.path.join(d_, p) for d_, p in VALID_PHOTOS]},
    }
    for split, r in rows.items():
        fname = split + ".tsv"
        sha = write_tsv(os.path.join(d, fname), r)
        manifest["splits"][split] = {"file": fname, "rows": len(r), "sha256": sha}
    for pkg in spec["sources"]:
        src = dict(SOURCES[pkg])
        src["package"] = pkg
        src["version"] = pkg_version(pkg)
        manifest["sources"].append(src)
    manifest["build_seconds"] = round(time.time() - t0, 2)
    write_json_atomic(mpath, manifest)
    print("%s: wrote %s (%s) in %.1f s" % (
        name, d, ", ".join("%s %d rows" % (k, v["rows"]) for k, v in manifest["splits"].items()),
        manifest["build_seconds"]))
    return 0


def build_text(name, d, mpath, seed, t0):
    """Build one of TEXT_DATASETS into folder d; the manifest is written last."""
    spec = TEXT_DATASETS[name]
    rows, info = spec["builder"](name, seed, spec["sizes"],
                                 lambda split: seeded_rng(name, seed, split))
    manifest = {
        "magic": MANIFEST_MAGIC,
        "builder_version": BUILDER_VERSION,
        "name": name,
        "seed": seed,
        "format": "tsv, no header, tab-separated; text columns are lowercase UTF-8",
        "columns": spec["columns"],
        "splits": {},
        "sources": [],
        "how": spec["how"],
        "builder": "scripts/build_data.py %s --seed %d" % (name, seed),
        "source_info": info,
    }
    for split, r in rows.items():
        for k, row in enumerate(r):
            check(len(row) == len(spec["columns"]), "%s %s row %d" % (name, split, k))
        fname = split + ".tsv"
        sha = write_tsv(os.path.join(d, fname), r)
        manifest["splits"][split] = {"file": fname, "rows": len(r), "sha256": sha}
    for pkg in spec["sources"]:
        src = dict(SOURCES[pkg])
        src["package"] = pkg
        src["version"] = pkg_version(pkg) if pkg in ("wordnet-base", "miscfiles") else None
        manifest["sources"].append(src)
    manifest["build_seconds"] = round(time.time() - t0, 2)
    write_json_atomic(mpath, manifest)
    print("%s: wrote %s (%s) in %.1f s" % (
        name, d, ", ".join("%s %d rows" % (k, v["rows"]) for k, v in manifest["splits"].items()),
        manifest["build_seconds"]))
    return 0


def av_media_intact(d, name):
    """An AV dataset is up to date only while it has the builder's columns and version
    (a dataset's own "version" in AV_DATASETS, bumped when its rows change, so the
    others are not rebuilt) and its media folder still holds the files the manifest
    counted (a deleted clip would otherwise become a reject per epoch)."""
    spec = AV_DATASETS.get(name)
    if not spec:
        return True
    try:
        with open(os.path.join(d, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, ValueError):
        return False
    if m.get("columns") != spec["columns"] or m.get("dataset_version", 1) != spec.get("version", 1):
        return False
    return not spec["media"] or m.get("media", {}).get("files") == av_sets.count_media(d, spec["media"])


def build_av(name, d, mpath, seed, t0):
    """Build one of AV_DATASETS into folder d (TSVs, media files); manifest last."""
    spec = AV_DATASETS[name]
    ctx = {"stamp_dir": STAMP_DIR, "background": random_background}
    if spec["media"] == "clips":
        ctx["photos"] = {"train": load_photos(TRAIN_PHOTOS), "valid": load_photos(VALID_PHOTOS)}
    rows, info = spec["builder"](name, seed, spec["sizes"],
                                 lambda split: seeded_rng(name, seed, split), d, ctx)
    manifest = {
        "magic": MANIFEST_MAGIC,
        "builder_version": BUILDER_VERSION,
        "name": name,
        "seed": seed,
        "format": ("tsv, no header, tab-separated; media columns are paths relative to "
                   "this folder; text columns lowercase"),
        "columns": spec["columns"],
        "splits": {},
        "sources": [],
        "how": spec["how"],
        "builder": "scripts/build_data.py %s --seed %d" % (name, seed),
        "dataset_version": spec.get("version", 1),
        "source_info": info,
    }
    for split, r in rows.items():
        for k, row in enumerate(r):
            check(len(row) == len(spec["columns"]), "%s %s row %d" % (name, split, k))
        fname = split + ".tsv"
        sha = write_tsv(os.path.join(d, fname), r)
        manifest["splits"][split] = {"file": fname, "rows": len(r), "sha256": sha}
    if spec["media"]:
        manifest["media"] = {"dir": spec["media"], "files": av_sets.count_media(d, spec["media"])}
    for pkg in spec["sources"]:
        src = dict(SOURCES[pkg])
        src["package"] = pkg
        src["version"] = pkg_version("miscfiles" if pkg == "miscfiles-web2" else pkg)
        manifest["sources"].append(src)
    manifest["build_seconds"] = round(time.time() - t0, 2)
    write_json_atomic(mpath, manifest)
    print("%s: wrote %s (%s) in %.1f s" % (
        name, d, ", ".join("%s %d rows" % (k, v["rows"]) for k, v in manifest["splits"].items()),
        manifest["build_seconds"]))
    return 0


# ---------------------------------------------------------------- test fixtures

def build_fixtures(outdir, seed):
    """Small real files for pipeline tests (committed under tests/data/): a few JPEGs
    with the shapes decoders get wrong, and a 40-row caption TSV with three bad rows
    whose positions tests/data/README.md documents."""
    os.makedirs(outdir, exist_ok=True)
    rng = seeded_rng("fixtures", seed, "all")
    photos = {f: Image.open(os.path.join(d, f)).convert("RGB")
              for d, f in [(OPENCV_DIR, "fruits.jpg"), (SKIMAGE_DIR, "astronaut.png"),
                           (SKIMAGE_DIR, "coffee.png"), (SKIMAGE_DIR, "rocket.jpg")]}

    def save(img, fname, **kw):
        p = os.path.join(outdir, fname)
        img.save(p, format="JPEG", **kw)
        return p

    written = []
    # A plain 96x96 RGB photo, a non-square one with odd sides (padding/rounding bugs),
    # a greyscale JPEG (one component), and a progressive JPEG (different decoder path).
    written.append(save(photos["astronaut.png"].resize((96, 96), Image.BILINEAR),
                        "astronaut_96.jpg", quality=85))
    written.append(save(photos["fruits.jpg"].resize((161, 97), Image.BILINEAR),
                        "fruits_161x97.jpg", quality=85))
    written.append(save(photos["coffee.png"].convert("L").resize((120, 80), Image.BILINEAR),
                        "coffee_gray_120x80.jpg", quality=85))
    written.append(save(photos["rocket.jpg"].resize((96, 64), Image.BILINEAR),
                        "rocket_progressive_96x64.jpg", quality=85, progressive=True))
    # A real JPEG cut off in the middle of its entropy-coded data.
    buf = io.BytesIO()
    photos["fruits.jpg"].resize((96, 96), Image.BILINEAR).save(buf, format="JPEG", quality=85)
    raw = buf.getvalue()
    p = os.path.join(outdir, "fruits_truncated.jpg")
    with open(p, "wb") as f:
        f.write(raw[:len(raw) // 2])
    written.append(p)
    # A real JPEG with garbage bytes in the middle of its header: the code counts of the
    # first Huffman table (the 16 bytes after the DHT marker, its length and its class
    # byte) are overwritten with 0xFF, so they add up to more than 256 codes. libjpeg-turbo
    # fails at the header ("Bogus Huffman table definition"), a fatal error.
    i = raw.find(b"\xff\xc4")
    check(i > 0, "no DHT marker in the JPEG")
    bad = raw[:i + 5] + b"\xff" * 16 + raw[i + 21:]
    p = os.path.join(outdir, "fruits_bad_huffman.jpg")
    with open(p, "wb") as f:
        f.write(bad)
    written.append(p)

    # The caption TSV: same composites as stamps_caption, at lower JPEG quality to keep
    # the file small. Bad rows are made from good ones, at fixed positions.
    stamps = load_stamps()
    bg = load_photos(TRAIN_PHOTOS)
    rows = []
    plan = composite_plan(rng, stamps, 40)
    for i, (si, pi) in enumerate(plan):
        st, pl = stamps[si], PLACES[pi]
        img, _ = compose(rng, bg, st, pl)
        b64, raw = b64_jpeg(img, quality=60)
        rows.append([str(i), b64, "%s %s %s" % (st["article"], st["phrase"], pl[0])])
    # Row 7 (0-based line index): a corrupt JPEG, valid base64 of the first 55% of a real
    # JPEG: the header is intact and the scan data stops in the middle, with no end-of-
    # image marker. Every decoder rejects this (libjpeg-turbo: "Premature end of JPEG
    # file"; PIL: "image file is truncated"). Garbage bytes inside the scan data were
    # tried first, but libjpeg-turbo reports them as a mere warning that decoders may
    # choose to accept; that case lives in fruits_bad_huffman.jpg instead, made fatal.
    raw = base64.urlsafe_b64decode(rows[7][1])
    rows[7][1] = base64.urlsafe_b64encode(raw[:len(raw) * 55 // 100]).decode("ascii")
    # Row 19: a missing column (the caption is gone; only id and image remain).
    rows[19] = rows[19][:2]
    # Row 31: invalid base64 ('*' and '!' are in neither alphabet; length not a multiple
    # of 4 once the garbage is in).
    rows[31][1] = rows[31][1][:40] + "*!not-base64!*" + rows[31][1][40:]
    tsv = os.path.join(outdir, "stamps_caption_small.tsv")
    write_tsv(tsv, rows)
    written.append(tsv)

    # A small all-good VQA file in the stamps_vqa layout.
    vrng = seeded_rng("fixtures", seed, "vqa")
    vrows = []
    for i, (si, pi) in enumerate(composite_plan(vrng, stamps, 12)):
        st, pl = stamps[si], PLACES[pi]
        img, _ = compose(vrng, bg, st, pl)
        b64, _ = b64_jpeg(img, quality=60)
        if i % 2 == 0:
            vrows.append([str(i), b64, "what is in the image?", st["name"]])
        else:
            vrows.append([str(i), b64, "where is the %s?" % st["name"], pl[1]])
    vtsv = os.path.join(outdir, "stamps_vqa_small.tsv")
    write_tsv(vtsv, vrows)
    written.append(vtsv)

    # object_detection's layout, 24 rows: the builder's composites, four made bad at
    # fixed rows (tests/data/README.md lists them).
    orows = build_object_detection("fixtures-od", seed, stamps, {"valid": (bg, 24, 0)})["valid"]
    orows[5][2] = orows[5][2].split("&&")[0].rsplit(",", 2)[0] + ",banana"
    orows[11][2] = "60,10,120,50,3,apple&&" + orows[11][2]
    orows[17][2] = ""
    orows[23][2] = "x" + orows[23][2][1:]
    otsv = os.path.join(outdir, "object_detection_small.tsv")
    write_tsv(otsv, orows)
    written.append(otsv)

    total = sum(os.path.getsize(p) for p in written)
    for p in written:
        print("%7d %s" % (os.path.getsize(p), p))
    print("fixtures: %d files, %d bytes" % (len(written), total))
    return 0


ALL_DATASETS = dict(DATASETS, **TEXT_DATASETS)
ALL_DATASETS.update(AV_DATASETS)


def main(argv):
    ap = argparse.ArgumentParser(
        description="Build small real datasets from Debian packages (see docs/data.md).")
    ap.add_argument("name", nargs="?",
                    help="dataset name: " + ", ".join(sorted(ALL_DATASETS)))
    ap.add_argument("--out", default="data", help="output folder (default: data)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--fixtures", metavar="DIR", help="write the test fixtures into DIR")
    ap.add_argument("--list", action="store_true", help="list the datasets")
    a = ap.parse_args(argv)
    try:
        if a.list:
            for n in sorted(ALL_DATASETS):
                print("%-22s columns: %s" % (n, " ".join(ALL_DATASETS[n]["columns"])))
            return 0
        if a.fixtures:
            return build_fixtures(a.fixtures, a.seed)
        if not a.name:
            ap.error("a dataset name is required (--list shows them)")
        if a.name not in ALL_DATASETS:
            ap.error("unknown dataset '%s' (known: %s)" % (a.name, ", ".join(sorted(ALL_DATASETS))))
        return build(a.name, a.out, a.seed, a.force)
    except (DataError, OSError) as e:
        print("build_data.py: %s" % e, file=sys.stderr)
        print("---> HINT: run scripts/setup.sh to install the source packages", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
