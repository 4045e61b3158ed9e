"""av_sets.py: the speech, video, motion and phone datasets of scripts/build_data.py.

Rows point at media files that the builder writes next to the TSV (OUT/NAME/wav/...,
OUT/NAME/clips/..., OUT/NAME/bvh/...), by paths relative to the TSV's folder: ofa-source
reads a value that names an existing file as that file's bytes (stages/source/source.h).

    speech_prompts   asterisk's recorded English prompts (one speaker, 8 kHz) joined with
                     their transcripts by name, plus espeak-ng speaking the same
                     transcripts in several voices and speeds. Valid: held-out prompts.
    speech_digits    spoken digit strings: asterisk's recorded digits spliced into strings
                     (the real speaker) and espeak-ng strings in many voices; valid uses
                     voices no training row uses, and its 3-4 digit strings are new.
    video_moves_*    clips of a tuxpaint photo stamp moving right, left, up or down over
                     a muted crop of a real photo, encoded and cut by ffmpeg: caption,
                     direction label, question/answer.
    motion_clips     windows of the two CMU captures of assimp-testmodels, labelled with
                     the clip they come from (the names are all there is).
    phone_words      English words (miscfiles' web2) -> espeak-ng's phonemes in IPA.

Each builder takes (name, seed, sizes, rng_for, outdir, ctx) and returns ({split: rows},
info); ctx carries build_data.py's image helpers (stamps, photos, muted backgrounds). A
builder raises DataError (set by build_data.py) naming the missing file and its package.
"""

import concurrent.futures
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import wave


class _Err(Exception):
    pass


DataError = _Err   # replaced by build_data.py with its own DataError

ASTERISK_DIR = "/usr/share/asterisk/sounds/en"
ASTERISK_TXT = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
BVH_DIR = "/usr/share/assimp/models/BVH"
WORDS = "/usr/share/dict/web2"

# espeak-ng voices (language) and variants (voice quality). Valid rows of speech_digits
# and speech_prompts use a language and variants that no training row uses, so "new
# speaker" is literally true for the synthesized part.
TRAIN_LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029"]
TRAIN_VARIANTS = ["", "m1", "m3", "m4", "f1", "f2", "f4"]
VALID_LANGS = ["en-us-nyc", "en-gb-x-gbclan"]
VALID_VARIANTS = ["m2", "f3"]
SPEEDS = (130, 190)   # words per minute, drawn uniformly

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# The video objects: (tuxpaint stamp, name). A subset of build_data.py's STAMPS with
# distinct shapes; each moves in one of four directions.
VIDEO_OBJECTS = [
    ("animals/marsupials/koala", "koala"), ("animals/mammals/equines/zebra", "zebra"),
    ("animals/mammals/pig", "pig"), ("animals/amphibians/frog", "frog"),
    ("household/rubberduck", "duck"), ("vehicles/auto/sedan", "car"),
    ("vehicles/flight/balloon360", "balloon"), ("household/dishes/teapot", "teapot"),
]
DIRECTIONS = ["right", "left", "up", "down"]
VIDEO_SIZE = 96
VIDEO_FRAMES = 8
VIDEO_FPS = 8

# motion_clips: the CMU captures (same 31-joint skeleton, 120 fps). Boxing_Toes.bvh of
# the same package has another skeleton (21 joints), so its features would have another
# width; it is left out rather than padded.
MOTION_CLIPS = [("01_01.bvh", "subject one trial one"), ("01_03.bvh", "subject one trial three")]
MOTION_WINDOW = 256      # frames of 120 fps = 2.1 s; the motion tier keeps 1 in 4 -> 64
MOTION_VALID_FRAC = 0.2  # the last 20% of each clip gives the valid windows


def _h(*parts):
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4],
                          "little")


def _need(path, pkg):
    if not os.path.exists(path):
        raise DataError("%s: missing (is %s installed? scripts/setup.sh installs it)" % (path, pkg))


def _need_prog(prog, pkg):
    if shutil.which(prog) is None:
        raise DataError("%s: program not found (install %s)" % (prog, pkg))


def _fresh_dir(d):
    """A media folder emptied first, so files of an older build never linger."""
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def _pmap(fn, jobs):
    """Run fn over jobs on two threads (each job starts a program); results in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as ex:
        return list(ex.map(fn, jobs))


def count_media(outdir, sub):
    d = os.path.join(outdir, sub)
    return sum(len(fs) for _, _, fs in os.walk(d)) if os.path.isdir(d) else 0


# ---------------------------------------------------------------- speech

def _normalize_transcript(s):
    """Lowercase words: the WER metric ignores case and punctuation anyway, and a target
    without them is what an ASR model can be asked to produce."""
    s = s.lower().replace("&", " and ")
    s = re.sub(r"[^a-z0-9' ]+", " ", s)
    return " ".join(w.strip("'") for w in s.split() if w.strip("'"))


def load_prompts():
    """asterisk's prompts: [(name, transcript, wav path)] for names with a WAV and a
    spoken transcript (not a "[tone]" description)."""
    _need(ASTERISK_TXT, "asterisk-core-sounds-en")
    _need(ASTERISK_DIR, "asterisk-core-sounds-en-wav")
    out = []
    with gzip.open(ASTERISK_TXT, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9_/.-]+):\s*(.*)$", line.strip())
            if not m or "[" in m.group(2):
                continue
            wav = os.path.join(ASTERISK_DIR, m.group(1) + ".wav")
            text = _normalize_transcript(m.group(2))
            if text and os.path.exists(wav):
                out.append((m.group(1), text, wav))
    if len(out) < 100:
        raise DataError("%s: only %d prompts join with a WAV" % (ASTERISK_TXT, len(out)))
    return out


def _espeak(job):
    """job = (text, lang, variant, speed, path): espeak-ng writes a 22.05 kHz WAV."""
    text, lang, variant, speed, path = job
    voice = lang + ("+" + variant if variant else "")
    r = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text],
                       capture_output=True)
    if r.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) < 1000:
        raise DataError("espeak-ng -v %s failed on %r: %s" % (voice, text, r.stderr[-200:]))
    return path


def _voice(rng, split):
    langs, variants = (TRAIN_LANGS, TRAIN_VARIANTS) if split == "train" else (VALID_LANGS, VALID_VARIANTS)
    return rng.choice(langs), rng.choice(variants), rng.randint(*SPEEDS)


def build_speech_prompts(name, seed, sizes, rng_for, outdir, ctx):
    """id, wav, text. Recorded prompts of at most max_words words, each also spoken by
    synth_per_prompt espeak-ng voices. Prompts are split by name (10% valid): valid
    sentences are never heard in training, by either voice."""
    _need_prog("espeak-ng", "espeak-ng")
    prompts = [p for p in load_prompts() if len(p[1].split()) <= sizes["max_words"]]
    _fresh_dir(os.path.join(outdir, "wav"))
    rows, info = {}, {"prompts_joined": len(prompts), "max_words": sizes["max_words"]}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        mine = [p for p in prompts if (_h(name, p[0]) % 10 == 0) == (split == "valid")]
        items, jobs = [], []
        for pname, text, wav in mine:
            rel = "wav/rec_%s.wav" % pname.replace("/", "_")
            shutil.copyfile(wav, os.path.join(outdir, rel))
            items.append((rel, text))
            for k in range(sizes["synth_per_prompt"]):
                lang, var, speed = _voice(rng, split)
                rel = "wav/tts_%s_%d.wav" % (pname.replace("/", "_"), k)
                jobs.append((text, lang, var, speed, os.path.join(outdir, rel)))
                items.append((rel, text))
        _pmap(_espeak, jobs)
        rng.shuffle(items)
        rows[split] = [[str(id0 + i), rel, text] for i, (rel, text) in enumerate(items)]
        info[split] = {"prompts": len(mine), "recorded": len(mine), "synthesized": len(jobs)}
    return rows, info


def _splice(paths, gaps_ms, out):
    """Concatenate WAVs of one format with silences between them (Python's wave)."""
    params, frames = None, []
    for i, p in enumerate(paths):
        with wave.open(p, "rb") as w:
            if params is None:
                params = w.getparams()
            elif (w.getframerate(), w.getsampwidth(), w.getnchannels()) != \
                    (params.framerate, params.sampwidth, params.nchannels):
                raise DataError("%s: format differs from %s" % (p, paths[0]))
            frames.append(w.readframes(w.getnframes()))
        if i + 1 < len(paths):
            n = params.framerate * gaps_ms[i] // 1000
            frames.append(b"\0" * (n * params.sampwidth * params.nchannels))
    with wave.open(out, "wb") as w:
        w.setnchannels(params.nchannels)
        w.setsampwidth(params.sampwidth)
        w.setframerate(params.framerate)
        w.writeframes(b"".join(frames))


def build_speech_digits(name, seed, sizes, rng_for, outdir, ctx):
    """id, wav, text: strings of 1-4 digit words ("four one seven"). A share of the rows
    (recorded_share) splices asterisk's recordings of the single digits (the one real
    speaker, 8 kHz, 60-250 ms gaps); the rest is espeak-ng (22.05 kHz) in the split's
    voices. No string of 3 or 4 digits is in both splits."""
    _need_prog("espeak-ng", "espeak-ng")
    rec = [os.path.join(ASTERISK_DIR, "digits", "%d.wav" % d) for d in range(10)]
    for p in rec:
        _need(p, "asterisk-core-sounds-en-wav")
    _fresh_dir(os.path.join(outdir, "wav"))
    rows, info = {}, {}
    train_strings = set()
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        n = sizes[split]
        items, jobs, nrec = [], [], 0
        for i in range(n):
            # The length first, so both splits have each length equally often; a valid
            # string of 3 or 4 digits is redrawn until training has not seen it (the
            # 10 one-digit and 100 two-digit strings all occur in training anyway).
            k = rng.randint(1, 4)
            while True:
                ds = [rng.randrange(10) for _ in range(k)]
                key = tuple(ds)
                if split == "train" or k <= 2 or key not in train_strings:
                    break
            if split == "train":
                train_strings.add(key)
            text = " ".join(DIGITS[d] for d in ds)
            rel = "wav/%s_%05d.wav" % (split, i)
            if rng.random() < sizes["recorded_share"]:
                _splice([rec[d] for d in ds], [rng.randint(60, 250) for _ in ds],
                        os.path.join(outdir, rel))
                nrec += 1
            else:
                lang, var, speed = _voice(rng, split)
                jobs.append((text, lang, var, speed, os.path.join(outdir, rel)))
            items.append((rel, text))
        _pmap(_espeak, jobs)
        rows[split] = [[str(id0 + i), rel, text] for i, (rel, text) in enumerate(items)]
        info[split] = {"recorded_spliced": nrec, "synthesized": len(jobs)}
    return rows, info


# ---------------------------------------------------------------- video

def _ffmpeg_clips(frames_iter, nclips, outdir, split):
    """Encode nclips clips of VIDEO_FRAMES frames each with one ffmpeg process: the RGB
    frames go in as one raw stream, every clip starts on a key frame, and the segment
    muxer cuts the stream into one MP4 per clip (H.264, one thread, bit-exact flags, so
    the bytes depend only on the frames). One process instead of one per clip: starting
    ffmpeg costs ~0.1 s, which made the build take minutes. Returns the clips' paths
    relative to outdir, in order."""
    seg = tempfile.mkdtemp(prefix="ofa-seg-", dir=outdir)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "%dx%d" % (VIDEO_SIZE, VIDEO_SIZE),
           "-framerate", str(VIDEO_FPS), "-i", "-",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
           "-threads", "1", "-g", str(VIDEO_FRAMES), "-keyint_min", str(VIDEO_FRAMES),
           "-sc_threshold", "0", "-force_key_frames", "expr:eq(mod(n,%d),0)" % VIDEO_FRAMES,
           "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
           "-f", "segment", "-segment_time", "%g" % (VIDEO_FRAMES / VIDEO_FPS),
           "-reset_timestamps", "1", "-segment_format", "mp4",
           os.path.join(seg, "%06d.mp4")]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for fr in frames_iter:
            p.stdin.write(fr)
        p.stdin.close()
    except BrokenPipeError:
        pass
    err = p.stderr.read().decode("utf-8", "replace")
    if p.wait() != 0:
        raise DataError("ffmpeg (segment muxer) failed: %s" % err[-300:])
    made = sorted(os.listdir(seg))
    if len(made) != nclips:
        raise DataError("ffmpeg cut %d clips, %d expected (%s)" % (len(made), nclips, err[-200:]))
    out = []
    for i, f in enumerate(made):
        rel = "clips/%s_%05d.mp4" % (split, i)
        os.replace(os.path.join(seg, f), os.path.join(outdir, rel))
        out.append(rel)
    os.rmdir(seg)
    return out


def _load_objects(ctx):
    from PIL import Image
    objs = []
    for rel, nm in VIDEO_OBJECTS:
        p = os.path.join(ctx["stamp_dir"], rel + ".png")
        _need(p, "tuxpaint-stamps-default")
        img = Image.open(p).convert("RGBA")
        bbox = img.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
        objs.append({"file": rel + ".png", "name": nm, "img": img.crop(bbox)})
    return objs


def _motion_path(rng, direction, w, h):
    """Start and per-frame step of a stamp of w x h that crosses most of the 96 px frame
    in VIDEO_FRAMES frames; the other coordinate is random but inside the frame."""
    span = VIDEO_SIZE - max(w, h)
    step = max(4, span // (VIDEO_FRAMES - 1))
    travel = step * (VIDEO_FRAMES - 1)
    lo = rng.randint(0, max(0, VIDEO_SIZE - travel - max(w, h)))
    if direction in ("right", "left"):
        y = rng.randint(0, VIDEO_SIZE - h)
        x0 = lo if direction == "right" else lo + travel
        return x0, y, (step if direction == "right" else -step), 0
    x = rng.randint(0, VIDEO_SIZE - w)
    y0 = lo if direction == "down" else lo + travel
    return x, y0, 0, (step if direction == "down" else -step)


def _video_rows(name, seed, sizes, rng_for, outdir, ctx, row_fn):
    """The clips of one video dataset and its rows: every (object, direction) pair
    equally often in each split; row_fn(rng, obj name, direction) gives the row's text
    columns. Frame k of a clip is the background with the stamp alpha-composited at
    (x0 + k*dx, y0 + k*dy), as ffmpeg's overlay filter with positions in n would place
    it; ffmpeg encodes and cuts the clips."""
    from PIL import Image
    _need_prog("ffmpeg", "ffmpeg")
    objs = _load_objects(ctx)
    _fresh_dir(os.path.join(outdir, "clips"))
    rows, info = {}, {"objects": [o["name"] for o in objs], "directions": DIRECTIONS,
                      "frames": VIDEO_FRAMES, "fps": VIDEO_FPS, "size": VIDEO_SIZE}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        photos = ctx["photos"][split]
        pairs = [(o, d) for o in range(len(objs)) for d in range(len(DIRECTIONS))]
        plan = []
        while len(plan) < sizes[split]:
            block = pairs[:]
            rng.shuffle(block)
            plan.extend(block)
        plan = plan[:sizes[split]]
        texts = []

        def frames():
            for oi, di in plan:
                obj, direction = objs[oi], DIRECTIONS[di]
                bg = ctx["background"](rng, photos)
                st = obj["img"]
                if rng.random() < 0.5:
                    st = st.transpose(Image.FLIP_LEFT_RIGHT)
                side = rng.randint(34, 42)
                sc = side / max(st.size)
                st = st.resize((max(4, round(st.width * sc)), max(4, round(st.height * sc))),
                               Image.LANCZOS)
                x0, y0, dx, dy = _motion_path(rng, direction, st.width, st.height)
                texts.append(row_fn(rng, obj["name"], direction))
                for k in range(VIDEO_FRAMES):
                    fr = bg.copy()
                    fr.paste(st, (x0 + k * dx, y0 + k * dy), st)
                    yield fr.tobytes()

        rels = _ffmpeg_clips(frames(), len(plan), outdir, split)
        rows[split] = [[str(id0 + i), rel] + t for i, (rel, t) in enumerate(zip(rels, texts))]
    return rows, info


def _article(w):
    return "an" if w[0] in "aeiou" else "a"


def build_video_moves_caption(name, seed, sizes, rng_for, outdir, ctx):
    """id, video, cap: "a koala moves right"."""
    return _video_rows(name, seed, sizes, rng_for, outdir, ctx,
                       lambda rng, o, d: ["%s %s moves %s" % (_article(o), o, d)])


def build_video_moves_classify(name, seed, sizes, rng_for, outdir, ctx):
    """id, video, label_name: the direction."""
    return _video_rows(name, seed, sizes, rng_for, outdir, ctx, lambda rng, o, d: [d])


def build_video_moves_qa(name, seed, sizes, rng_for, outdir, ctx):
    """id, video, question, answer: half "which way does the koala move?" -> direction,
    half "what moves in the video?" -> the object's name."""
    def qa(rng, o, d):
        if rng.random() < 0.5:
            return ["which way does the %s move?" % o, d]
        return ["what moves in the video?", o]
    return _video_rows(name, seed, sizes, rng_for, outdir, ctx, qa)


# ---------------------------------------------------------------- motion

def _read_bvh(path):
    """(header lines up to and including "Frame Time:", frame lines)."""
    _need(path, "assimp-testmodels")
    with open(path, encoding="ascii", errors="replace") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    for i, ln in enumerate(lines):
        if ln.startswith("Frame Time:"):
            head = lines[:i + 1]
            frames = [ln for ln in lines[i + 1:] if ln.strip()]
            return head, frames
    raise DataError("%s: no 'Frame Time:' line" % path)


def build_motion_clips(name, seed, sizes, rng_for, outdir, ctx):
    """id, bvh, label. Each row is a BVH file of MOTION_WINDOW frames cut from one CMU
    capture (its full hierarchy, the Frames: line rewritten); label names the capture.
    Training windows start anywhere in the first 80% of the clip, validation windows lie
    wholly in the last 20%; both splits have the same number of windows per clip."""
    _fresh_dir(os.path.join(outdir, "bvh"))
    rows, info = {"train": [], "valid": []}, {"clips": []}
    for ci, (fname, label) in enumerate(MOTION_CLIPS):
        head, frames = _read_bvh(os.path.join(BVH_DIR, fname))
        cut = int(len(frames) * (1 - MOTION_VALID_FRAC))
        info["clips"].append({"file": os.path.join(BVH_DIR, fname), "frames": len(frames),
                              "label": label, "train_frames": cut})
        for split, lo, hi in (("train", 0, cut - MOTION_WINDOW), ("valid", cut, len(frames) - MOTION_WINDOW)):
            rng = rng_for(split + "/" + fname)
            n = sizes[split] // len(MOTION_CLIPS)
            for k in range(n):
                s = rng.randint(lo, hi)
                rel = "bvh/%s_%s_%04d.bvh" % (split, fname[:-4], k)
                with open(os.path.join(outdir, rel), "w", encoding="ascii", newline="\n") as f:
                    for ln in head:
                        f.write(("Frames: %d" % MOTION_WINDOW if ln.startswith("Frames:") else ln) + "\n")
                    f.write("\n".join(frames[s:s + MOTION_WINDOW]) + "\n")
                rows[split].append([rel, label])
    out = {}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        r = rows[split]
        rng_for(split).shuffle(r)
        out[split] = [[str(id0 + i)] + x for i, x in enumerate(r)]
    return out, info


# ---------------------------------------------------------------- phone

def _phonemize(words, voice="en-us"):
    """espeak-ng's phonemes of each word in IPA, one phoneme per space-separated token
    ("reading" -> "ɹ ˈiː d ɪ ŋ"; a stress mark stays on its vowel). IPA rather than the
    ASCII mnemonics of -x because the metrics' normalisation lowercases ASCII and strips
    ASCII punctuation, which would merge S with s and drop @ and stress quotes; the IPA
    symbols are not ASCII and pass through unchanged. One espeak-ng process reads all
    words, one per line, and answers one line per word."""
    r = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep= ", "-v", voice],
                       input="\n".join(words) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        raise DataError("espeak-ng -x failed: %s" % r.stderr[-200:])
    out = [" ".join(ln.split()) for ln in r.stdout.split("\n") if ln.strip()]
    if len(out) != len(words):
        raise DataError("espeak-ng -x gave %d lines for %d words" % (len(out), len(words)))
    return out


def build_phone_words(name, seed, sizes, rng_for, outdir, ctx):
    """id, text, letters, phone: an English word of miscfiles' web2 (3-8 lowercase
    letters), the same word spelt out ("r e a d i n g") and its phonemes as espeak-ng
    (en-us) says them. The spelt-out column exists because the BPE merges a word into
    opaque chunks, hiding the letters a grapheme-to-phoneme model has to read; spaced
    letters are one token each (merges never cross a space). Words split by a hash
    (5% valid)."""
    _need(WORDS, "miscfiles")
    _need_prog("espeak-ng", "espeak-ng")
    with open(WORDS, encoding="utf-8", errors="replace") as f:
        words = sorted({w.strip() for w in f if re.fullmatch(r"[a-z]{3,8}", w.strip())})
    rows, info = {}, {"candidates": len(words), "voice": "en-us"}
    for split, id0 in (("train", 0), ("valid", 1000000)):
        rng = rng_for(split)
        mine = [w for w in words if (_h(name, w) % 100 < 5) == (split == "valid")]
        if len(mine) < sizes[split]:
            raise DataError("%s: only %d words for %s" % (WORDS, len(mine), split))
        pick = rng.sample(mine, sizes[split])
        ph = _phonemize(pick)
        rows[split] = [[str(id0 + i), w, " ".join(w), p] for i, (w, p) in enumerate(zip(pick, ph))]
    return rows, info
