#!/usr/bin/python3
"""ofa_text_tokenize.py: the tokenize tier for text-only tasks, written in Python.

A worker stage in another language than the rest of the pipeline: it speaks the protocol
of docs/protocol.md with python3-zmq and python3-msgpack (Debian's packages, run by
/usr/bin/python3) and passes the conformance kit (docs/conformance.md). For a task whose
instruction has only text-like slots (TEXT, CATEGORY, STRUCT) it builds the same model
input as the C stage ofa-tokenize, bit for bit:

    src_tok i32 (S), src_mod u8 (S), tgt_in i32 (T), tgt_out i32 (T), ref (str),
    tok.src_cut, tok.tgt_cut, tok.masked (int)

with the project's byte-level BPE (the merges file that launch trains, RUN_DIR/bpe.bin),
the grouping of adjacent text into <s> ... </s>, the attributes uncased, no_punctuation,
max_length and no_loss, ||| templates picked by (seed, sample id), and the truncation
rule of stages/tokenize/tokenize.h. A sample of a task it cannot build (an IMAGE or BOX
slot, mask_ratio= or noise_ratio=, a repeated group) is rejected with the reason.

Use it in a plan in place of the C stage:

    stages = { tokenize = { program = ["/usr/bin/python3", "stages/python/ofa_text_tokenize.py"]; }; };

launch appends the common flags (--id --ctl --plan --stats --run-dir --tier --credits,
and --curve FILE on tcp:// runs: the run's CURVE keys, see common/curve.h).
"""
import argparse
import mmap
import os
import signal
import struct
import sys
import time

import msgpack
import zmq

SAMPLE, BATCH, CREDIT, REJECT, STATS, CONTROL = 1, 2, 3, 4, 5, 6
HEARTBEAT_S = 0.5
BOS, PAD, EOS, UNK, MASK, BYTE0 = 0, 1, 2, 3, 4, 5
FIRST_MERGE = BYTE0 + 256
MOD_TEXT = 0
TEXTLIKE = {"TEXT": 0, "CATEGORY": 0, "STRUCT": 0}
MODALITIES = ("TEXT", "IMAGE", "BOX", "AUDIO", "VIDEO", "PHONE", "MOTION", "STRUCT",
              "CATEGORY")
MASK64 = (1 << 64) - 1


# ---- the plan (a libconfig file) ------------------------------------------------------

class ConfigError(Exception):
    pass


def parse_libconfig(text):
    """The subset of libconfig that plan files use: settings `name = value;` (or `:`),
    groups {}, lists (), arrays [], strings (adjacent ones joined), numbers, booleans,
    and # // /* */ comments. Returns a dict."""
    toks = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ConfigError(f"line {line}: unterminated comment")
            line += text.count("\n", i, j)
            i = j + 2
        elif c == '"':
            j, out = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    out.append({"n": "\n", "t": "\t", "r": "\r", "f": "\f"}.get(
                        text[j + 1], text[j + 1]))
                    j += 2
                else:
                    out.append(text[j])
                    j += 1
            if j >= n:
                raise ConfigError(f"line {line}: unterminated string")
            if toks and toks[-1][0] == "str":
                toks[-1] = ("str", toks[-1][1] + "".join(out), line)
            else:
                toks.append(("str", "".join(out), line))
            i = j + 1
        elif c in "{}()[],;=:":
            toks.append(("p", c, line))
            i += 1
        else:
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_-+.*"):
                j += 1
            if j == i:
                raise ConfigError(f"line {line}: unexpected '{c}'")
            toks.append(("w", text[i:j], line))
            i = j
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else ("eof", "", line)

    def take(kind=None, val=None):
        t = peek()
        if (kind and t[0] != kind) or (val and t[1] != val):
            raise ConfigError(f"line {t[2]}: expected {val or kind}, got '{t[1]}'")
        pos[0] += 1
        return t

    def value():
        t = take()
        if t[0] == "str":
            return t[1]
        if t[0] == "p" and t[1] in "{([":
            close = {"{": "}", "(": ")", "[": "]"}[t[1]]
            if t[1] == "{":
                return settings(close)
            out = []
            while peek()[1] != close:
                out.append(value())
                if peek()[1] == ",":
                    take()
            take("p", close)
            return out
        if t[0] == "w":
            w = t[1].lower()
            if w in ("true", "false"):
                return w == "true"
            try:
                return int(w.rstrip("l"), 0)
            except ValueError:
                try:
                    return float(w)
                except ValueError:
                    pass
        raise ConfigError(f"line {t[2]}: bad value '{t[1]}'")

    def settings(close):
        out = {}
        while peek()[0] != "eof" and peek()[1] != close:
            name = take("w")[1]
            if peek()[1] in ("=", ":"):
                take()
            out[name] = value()
            if peek()[1] in (";", ","):
                take()
        if close:
            take("p", close)
        return out

    return settings(None)


# ---- instructions (the text-only part of plans/instr.c and plans/taskplan.c) ----------

class TaskError(Exception):
    pass


def parse_slot(body):
    parts = [p.strip() for p in body.split(",")]
    head = parts[0]
    mod, _, column = head.partition(":")
    mod = mod.strip()
    if mod not in MODALITIES:
        raise TaskError(f"unknown modality '{mod}'")
    if mod not in TEXTLIKE:
        raise TaskError(f"a {mod} slot: this stage serves text-only tasks (TEXT, "
                        "CATEGORY, STRUCT slots)")
    slot = {"mod": mod, "column": column.strip(), "uncased": False, "no_punctuation": False,
            "max_length": 0, "no_loss": False, "add_bos": False, "add_eos": False}
    if not slot["column"]:
        raise TaskError(f"{mod} slot without a column name")
    for a in parts[1:]:
        key, _, val = a.partition("=")
        key = key.strip()
        if key in ("uncased", "no_punctuation", "no_loss", "add_bos", "add_eos"):
            slot[key] = True
        elif key == "max_length":
            slot["max_length"] = int(val)
        elif key in ("mask_ratio", "noise_ratio"):
            if float(val) > 0:
                raise TaskError(f"slot {slot['column']}: {key} is not implemented by this "
                                "stage (use ofa-tokenize)")
        elif key in ("closed_set", "preprocess", "adaptor"):
            pass
        else:
            raise TaskError(f"slot {slot['column']}: attribute '{key}' is not known here")
    return slot


def compile_side(text, target):
    """One side of a template -> a list of sequences, each a list of items: ("text", s)
    or ("slot", slot). The target side is later laid out as one sequence."""
    seqs, open_seq, i = [], False, 0
    items_text_from = 0

    def add(item):
        nonlocal open_seq
        if not open_seq:
            seqs.append([])
            open_seq = True
        seqs[-1].append(item)

    def flush_text(a, b):
        s = text[a:b].strip(" \t\n\v\f\r")
        if s:
            add(("text", s))

    while i < len(text):
        if text[i] == "[":
            j = text.find("]", i)
            if j < 0:
                raise TaskError("unbalanced '['")
            flush_text(items_text_from, i)
            slot = parse_slot(text[i + 1:j])
            slot["target"] = target
            slot["loss"] = target and not slot["no_loss"]
            if slot["add_bos"]:
                open_seq = False
            add(("slot", slot))
            if slot["add_eos"]:
                open_seq = False
            i = items_text_from = j + 1
        elif text.startswith("<BOS>", i) or text.startswith("<EOS>", i):
            flush_text(items_text_from, i)
            open_seq = False
            i = items_text_from = i + 5
        elif text.startswith(")*", i) or text[i] == "(":
            raise TaskError("repeated groups ( ... )* are not implemented by this stage")
        else:
            i += 1
    flush_text(items_text_from, len(text))
    return seqs


def compile_task(instruction):
    tmpls = []
    for alt in instruction.split("|||"):
        if alt.count("->") != 1:
            raise TaskError("an instruction has exactly one '->'")
        src, tgt = alt.split("->")
        tmpls.append((compile_side(src, False), compile_side(tgt, True)))
    return tmpls


def splitmix64(state):
    """One step of util_rng_next: returns (new state, value)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def pick_template(ntmpls, seed, sample_id):
    if ntmpls <= 1:
        return 0
    _, v = splitmix64((seed ^ ((sample_id * 0x9E3779B97F4A7C15) & MASK64)) & MASK64)
    return v % ntmpls


# ---- BPE (stages/text/bpe.h) -----------------------------------------------------------

def byte_class(c):
    if c >= 0x80 or 0x61 <= c <= 0x7A or 0x41 <= c <= 0x5A:
        return 0
    if 0x30 <= c <= 0x39:
        return 1
    if c in (0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C):
        return 2
    return 3


def pretokenize(s):
    i, n, out = 0, len(s), []
    while i < n:
        start, c = i, byte_class(s[i])
        if s[i] == 0x20 and i + 1 < n and byte_class(s[i + 1]) != 2:
            c = byte_class(s[i + 1])
            i += 2
            while i < n and byte_class(s[i]) == c:
                i += 1
        elif c == 2:
            while i < n and byte_class(s[i]) == 2:
                i += 1
            if i < n and i - start > 1 and s[i - 1] == 0x20:
                i -= 1
        else:
            while i < n and byte_class(s[i]) == c:
                i += 1
        out.append(s[start:i])
    return out


class Bpe:
    def __init__(self, path):
        with open(path, "rb") as f:
            lines = f.read().decode("ascii").split("\n")
        if lines[0] != "OFABPE 1":
            raise ValueError(f"{path}: not an OFABPE 1 merges file")
        if not lines[1].startswith("merges "):
            raise ValueError(f"{path}: line 2 must be 'merges M'")
        m = int(lines[1].split()[1])
        self.ranks = {}
        for r in range(m):
            a, b = lines[2 + r].split()
            self.ranks[(int(a), int(b))] = r
        self.n_merges = m
        self.cache = {}

    def bin0(self):
        return FIRST_MERGE + self.n_merges

    def encode_piece(self, piece):
        got = self.cache.get(piece)
        if got is not None:
            return got
        sym = [BYTE0 + b for b in piece]
        while len(sym) > 1:
            best, at = None, -1
            for k in range(len(sym) - 1):
                r = self.ranks.get((sym[k], sym[k + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, k
            if best is None:
                break
            sym[at:at + 2] = [FIRST_MERGE + best]
        if len(self.cache) < 65536:
            self.cache[piece] = sym
        return sym

    def encode(self, data):
        out = []
        for p in pretokenize(data):
            out.extend(self.encode_piece(p))
        return out


# ---- building a sample (stages/tokenize/tokenize.c, text-only) --------------------------

PUNCT = set(range(33, 48)) | set(range(58, 65)) | set(range(91, 97)) | set(range(123, 127))
SPACE = b" \t\n\v\f\r"


def normalize(slot, value):
    value = value.strip(SPACE)
    out = bytearray()
    for c in value:
        if slot["no_punctuation"] and c in PUNCT:
            continue
        out.append(c + 32 if slot["uncased"] and 0x41 <= c <= 0x5A else c)
    return bytes(out)


class Piece:
    __slots__ = ("ids", "cuttable", "loss")

    def __init__(self, ids, cuttable=False, loss=False):
        self.ids, self.cuttable, self.loss = ids, cuttable, loss


def truncate(pieces, budget):
    """Cut the longest cuttable piece first (down to the second longest at a time) until
    the total fits; returns the number of tokens cut, or None when it cannot fit."""
    total, cut = sum(len(p.ids) for p in pieces), 0
    while total > budget:
        a = b = None
        for p in pieces:
            if not p.cuttable or not p.ids:
                continue
            if a is None or len(p.ids) > len(a.ids):
                a, b = p, a
            elif b is None or len(p.ids) > len(b.ids):
                b = p
        if a is None:
            return None
        c = total - budget
        room = max(1, len(a.ids) - (len(b.ids) if b else 0))
        c = min(c, room)
        del a.ids[len(a.ids) - c:]
        total -= c
        cut += c
    return cut


class Tokenizer:
    def __init__(self, plan, bpe):
        self.bpe = bpe
        self.seed = int(plan.get("seed", 0))
        model = plan.get("model", {})
        self.tasks = {}
        for t in plan.get("tasks", []):
            entry = {"max_src": int(t.get("max_src_len", model.get("max_src_len", 256))),
                     "max_tgt": int(t.get("max_tgt_len", model.get("max_tgt_len", 64)))}
            try:
                entry["tmpls"] = compile_task(t["instruction"])
            except (TaskError, ValueError) as e:
                entry["why"] = str(e)
                print(f"ofa_text_tokenize: warning: task {t.get('name')} cannot be "
                      f"tokenized, its samples will be rejected: {e}", file=sys.stderr)
            self.tasks[t.get("name", "")] = entry

    def build(self, task, sample_id, fields):
        """Returns (fields to set) or raises TaskError with the reason."""
        t = self.tasks.get(task)
        if t is None:
            raise TaskError(f"unknown task '{task}' (not in the plan)")
        if "why" in t:
            raise TaskError(f"task {task}: {t['why']}")
        src_seqs, tgt_seqs = t["tmpls"][pick_template(len(t["tmpls"]), self.seed,
                                                      sample_id)]
        ref = []

        def item_piece(item, target):
            kind, x = item
            if kind == "text":
                return Piece(self.bpe.encode(b" " + x.encode()))
            col = x["column"]
            if col not in fields:
                raise TaskError(f"column {col}: missing from the sample")
            v = fields[col]
            if isinstance(v, str):
                v = v.encode("utf-8", "surrogateescape")
            if not isinstance(v, (bytes, bytearray)):
                raise TaskError(f"column {col}: expected text for a {x['mod']} slot")
            norm = normalize(x, bytes(v))
            if target and x["loss"]:
                ref.append(norm)
            p = Piece(self.bpe.encode(b" " + norm), cuttable=True, loss=x["loss"])
            if x["max_length"] > 0 and len(p.ids) > x["max_length"]:
                del p.ids[x["max_length"]:]
            return p

        src = []
        for seq in src_seqs:
            src.append(Piece([BOS]))
            src.extend(item_piece(it, False) for it in seq)
            src.append(Piece([EOS]))
        src_cut = truncate(src, t["max_src"])
        if src_cut is None:
            other = sum(len(p.ids) for p in src)
            raise TaskError(f"source needs more than max_src_len={t['max_src']} positions "
                            f"even with every text slot cut ({other} other positions)")
        tgt = [Piece([BOS])]
        any_loss = False
        for seq in tgt_seqs:
            for it in seq:
                tgt.append(item_piece(it, True))
                any_loss |= it[0] == "slot" and it[1]["loss"]
        tgt.append(Piece([EOS], loss=any_loss))
        tgt_cut = truncate(tgt, t["max_tgt"] + 1)
        if tgt_cut is None:
            raise TaskError(f"target needs more than max_tgt_len={t['max_tgt']} positions "
                            "even with every text slot cut")
        src_tok = [i for p in src for i in p.ids]
        y = [(i, p.loss) for p in tgt for i in p.ids]
        tgt_in = [i for i, _ in y[:-1]]
        tgt_out = [i if loss else PAD for i, loss in y[1:]]
        return {
            "src_tok": tensor("i32", src_tok),
            "src_mod": {"dtype": "u8", "shape": [len(src_tok)],
                        "data": bytes([MOD_TEXT]) * len(src_tok)},
            "tgt_in": tensor("i32", tgt_in),
            "tgt_out": tensor("i32", tgt_out),
            "ref": b" ".join(ref).decode("utf-8", "replace"),
            "tok.src_cut": src_cut,
            "tok.tgt_cut": tgt_cut,
            "tok.masked": 0,
        }


def tensor(dtype, values):
    data = b"".join(int(v).to_bytes(4, "little", signed=True) for v in values)
    return {"dtype": dtype, "shape": [len(values)], "data": data}


# ---- the protocol -----------------------------------------------------------------------

CURVE_MAGIC = "# ofa-curve-keys 1"


def load_curve_keys(path):
    """The run's CURVE keys (common/curve.h's file): a dict of the four Z85 keys as
    bytes. Refuses a file others may read, as the C reader does."""
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise ValueError(f"CURVE key file {path}: mode {st.st_mode & 0o777:03o} lets others "
                         "read it; it must be 0600")
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    if lines[0] != CURVE_MAGIC:
        raise ValueError(f"CURVE key file {path}:1: not a key file (the first line must be "
                         f"'{CURVE_MAGIC}')")
    keys = {}
    for line in lines[1:]:
        name, eq, val = line.partition("=")
        if eq and not line.startswith("#"):
            keys[name.strip()] = val.strip().encode()
    for k in ("server-public", "client-public", "client-secret"):
        if len(keys.get(k, b"")) != 40:
            raise ValueError(f"CURVE key file {path}: no 40-character {k}")
    return keys


def curve_client(sock, keys):
    """Make sock a CURVE client of the run's servers (before it connects)."""
    if keys:
        sock.curve_serverkey = keys["server-public"]
        sock.curve_publickey = keys["client-public"]
        sock.curve_secretkey = keys["client-secret"]

def envelope(kind, task="", ids=(), op=None, fields=None):
    env = {"magic": "OFAC", "v": 1, "kind": kind, "task": task, "ids": list(ids),
           "f": fields or {}}
    if op:
        env["op"] = op
    return env


DTYPE_SIZE = {"u8": 1, "i32": 4, "i64": 8, "f32": 4, "bf16": 2, "u16": 2}


def field_bytes(key, value, frames):
    """The bytes of an out-of-line bin or tensor field {"data": D}, whichever transport
    carried them (inline, a following frame, or POSIX shared memory, which the receiver
    unlinks); ValueError names what is wrong, as the C decoder does."""
    d = value.get("data")
    if isinstance(d, bytes):
        return d
    if isinstance(d, int) and not isinstance(d, bool):
        if not 1 <= d < len(frames):
            raise ValueError(f"field '{key}': frame {d} of {len(frames) - 1}")
        return frames[d]
    if not isinstance(d, dict):
        raise ValueError(f"field '{key}': data must be a bin, a frame index or a "
                         "shared-memory descriptor")
    name, off, ln = d.get("name"), d.get("offset"), d.get("len")
    if not isinstance(name, str) or not name.startswith("/") or "/" in name[1:] \
            or len(name) < 2:
        raise ValueError(f"field '{key}': shared memory needs a name '/NAME'")
    if not isinstance(off, int) or not isinstance(ln, int) or off < 0 or ln < 0:
        raise ValueError(f"field '{key}': shared memory needs offset and len")
    if "gen" in d:
        return _arena_bytes(key, name, off, ln, d["gen"])
    try:
        fd = os.open("/dev/shm" + name, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"field '{key}': shm {name}: {e.strerror}") from None
    try:
        os.unlink("/dev/shm" + name)
        if off + ln > os.fstat(fd).st_size:
            raise ValueError(f"field '{key}': shm {name}: {off}+{ln} past its end")
        if ln == 0:
            return b""
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
            return m[off:off + ln]
    finally:
        os.close(fd)


ARENA_MAGIC, ARENA_HDR, SLOT_HDR = 0x414e455241414f46, 128, 64


def _arena_bytes(key, name, off, ln, gen):
    """A slot of a long-lived arena (docs/protocol.md, Arena descriptors): checked against
    the slot header in the shared memory (a used slot of that generation and length),
    copied out, and never unlinked; its release is the broker's."""
    if not _is_int(gen) or gen <= 0 or gen >= 1 << 62:
        raise ValueError(f"field '{key}': arena descriptor: bad gen (a positive integer, once)")
    if not name.startswith("/ofa-arena-"):
        raise ValueError(f"field '{key}': arena descriptor: name '{name[:80]}' is not "
                         "/ofa-arena-...")
    try:
        fd = os.open("/dev/shm" + name, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"field '{key}': arena {name}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        if size < ARENA_HDR + SLOT_HDR:
            raise ValueError(f"field '{key}': arena {name}: too small to be an arena")
        if off < ARENA_HDR + SLOT_HDR or off > size - 64 or (off - ARENA_HDR) % 64:
            raise ValueError(f"field '{key}': arena {name}: offset {off} is not a slot")
        if ln > size - off:
            raise ValueError(f"field '{key}': arena {name}: len {ln} at offset {off} beyond "
                             "the arena")
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as m:
            if struct.unpack_from("<Q", m, 0)[0] != ARENA_MAGIC:
                raise ValueError(f"field '{key}': arena {name}: bad header")
            tag, slen = struct.unpack_from("<QQ", m, off - SLOT_HDR)
            if tag & 3 != 1 or tag >> 2 != gen:
                raise ValueError(f"field '{key}': arena {name}: gen {gen} at offset {off} is "
                                 f"stale (the slot holds gen {tag >> 2}, "
                                 f"{'in use' if tag & 3 == 1 else 'released'})")
            if slen != ln:
                raise ValueError(f"field '{key}': arena {name}: len {ln} at offset {off}, the "
                                 f"slot holds {slen}")
            data = m[off:off + ln]
            if struct.unpack_from("<Q", m, off - SLOT_HDR)[0] != tag:
                raise ValueError(f"field '{key}': arena {name}: the slot was released while "
                                 "it was read")
            return data
    finally:
        os.close(fd)


def _no_dup_map(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"repeated key {k!r}")
        out[k] = v
    return out


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def decode(frames):
    """The envelope of a received message, with every field's data made inline; raises
    ValueError on anything the C decoder (proto_decode_frames) refuses: a stage must not
    answer a message no other process would accept."""
    try:
        env = msgpack.unpackb(frames[0], raw=False, unicode_errors="surrogateescape",
                              object_pairs_hook=_no_dup_map, strict_map_key=False)
    except ValueError as e:
        raise ValueError(f"not a message: {e}") from None
    except Exception as e:
        raise ValueError(f"not a msgpack message: {e}") from None
    if not isinstance(env, dict) or len(env) > 32:
        raise ValueError("envelope: not a map of at most 32 keys")
    if env.get("magic") != "OFAC":
        raise ValueError("envelope: bad magic")
    if not _is_int(env.get("v")) or env["v"] != 1:
        raise ValueError("envelope: unsupported version (want 1)")
    if not _is_int(env.get("kind")) or not SAMPLE <= env["kind"] <= CONTROL:
        raise ValueError("envelope: unknown kind")
    task = env.get("task", "")
    if not isinstance(task, str) or len(task.encode("utf-8", "surrogateescape")) > 127:
        raise ValueError("envelope: task must be a string of at most 127 bytes")
    ids = env.get("ids", [])
    if not isinstance(ids, list) or len(ids) > 65536 or \
            not all(_is_int(i) and 0 <= i < 1 << 64 for i in ids):
        raise ValueError("envelope: ids must be an array of at most 65536 uint64")
    op = env.get("op", "")
    if not isinstance(op, str) or len(op.encode("utf-8", "surrogateescape")) > 31:
        raise ValueError("envelope: op must be a string of at most 31 bytes")
    f = env.get("f", {})
    if not isinstance(f, dict) or len(f) > 256:
        raise ValueError("envelope: f must be a map of at most 256 fields")
    for k, v in list(f.items()):
        if not isinstance(k, str) or not k or "\0" in k or len(k.encode()) > 63:
            raise ValueError("envelope: a field key must be a string of 1 to 63 bytes")
        if isinstance(v, (bool, int, float, str, bytes)):
            if _is_int(v) and not -(1 << 63) <= v < 1 << 63:
                raise ValueError(f"field '{k}': integer out of the int64 range")
            continue
        if not isinstance(v, dict) or len(v) > 8 or "data" not in v:
            raise ValueError(f"field '{k}': not an int, float, str, bin or tensor")
        data = field_bytes(k, v, frames)
        if "dtype" not in v and "shape" not in v:
            f[k] = data        # a bin sent out of line
            continue
        dt, shape = v.get("dtype"), v.get("shape")
        if dt not in DTYPE_SIZE:
            raise ValueError(f"field '{k}': unknown dtype {dt!r}")
        if not isinstance(shape, list) or len(shape) > 6 or \
                not all(_is_int(x) and x >= 0 for x in shape):
            raise ValueError(f"field '{k}': shape must be 0 to 6 non-negative dimensions")
        need = DTYPE_SIZE[dt]
        for x in shape:
            need *= x
        if need != len(data):
            raise ValueError(f"field '{k}': shape needs {need} bytes, data has {len(data)}")
        v["data"] = bytes(data)
    env["f"] = f
    return env


def main():
    p = argparse.ArgumentParser(
        description="tokenize tier for text-only tasks (Python); see docs/conformance.md")
    for flag in ("--id", "--ctl", "--plan", "--stats", "--run-dir", "--tier", "--bpe",
                 "--curve", "--arena"):
        p.add_argument(flag, default="")
    p.add_argument("--credits", type=int, default=8)
    # --arena TAG / --arena-mb N: where large outputs would go; this tier makes none (its
    # token ids are small), so they are accepted and not used.
    p.add_argument("--arena-mb", type=int, default=256)
    a = p.parse_args()
    if not 1 <= a.credits <= 100000:
        p.error("--credits needs a number from 1 to 100000")
    tier = a.tier or "tokenize"
    pid = a.id or "tokenize-py"
    bpe_path = a.bpe or os.path.join(a.run_dir, "bpe.bin")
    try:
        with open(a.plan, encoding="utf-8") as f:
            plan = parse_libconfig(f.read())
        tok = Tokenizer(plan, Bpe(bpe_path))
        keys = load_curve_keys(a.curve) if a.curve else None
    except (OSError, ValueError, ConfigError) as e:
        print(f"ofa_text_tokenize: cannot start: {e}\n---> HINT: --plan is the run's "
              "plan.resolved.conf, --bpe (or RUN_DIR/bpe.bin) the merges file and --curve the "
              "run's key file",
              file=sys.stderr)
        return 1

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, pid.encode())
    sock.setsockopt(zmq.LINGER, 1000)
    curve_client(sock, keys)
    sock.connect(a.ctl)
    stats = ctx.socket(zmq.PUSH)
    stats.setsockopt(zmq.SNDHWM, 16)
    stats.setsockopt(zmq.LINGER, 500)
    curve_client(stats, keys)
    if a.stats:
        stats.connect(a.stats)
    counters = {"items_in": 0.0, "items_out": 0.0, "bytes_in": 0.0, "bytes_out": 0.0,
                "busy_s": 0.0, "wait_s": 0.0, "rejected": 0.0}

    def push_stats():
        if not a.stats:
            return
        f = {"proc": pid, "tier": tier, "pid": os.getpid(), "time": time.time(), **counters}
        try:
            stats.send(msgpack.packb(envelope(STATS, fields=f), use_bin_type=True),
                       zmq.DONTWAIT)
        except zmq.Again:
            pass   # never stall on stats

    def send(env):
        sock.send(msgpack.packb(env, use_bin_type=True, unicode_errors="surrogateescape"))

    send(envelope(CONTROL, op="hello", fields={
        "role": "worker", "id": pid, "tier": tier, "credits": a.credits}))
    last_send = last_stats = wait_from = time.monotonic()
    while not stop:
        try:
            ready = sock.poll(100)
        except zmq.ZMQError:
            ready = 0   # interrupted by a signal
        while ready and not stop:
            try:
                frames = sock.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                break
            try:
                env = decode(frames)
            except (ValueError, OSError, KeyError, TypeError) as e:
                print(f"ofa_text_tokenize: dropped a malformed message: {e}", file=sys.stderr)
                continue
            if env["kind"] == CONTROL:
                if env.get("op") == "stop":
                    stop.append(1)
                continue
            if env["kind"] != SAMPLE:
                continue
            t0 = time.monotonic()
            counters["wait_s"] += t0 - wait_from
            counters["items_in"] += 1
            f = env["f"]
            ids = env.get("ids", [])
            try:
                if len(ids) != 1:
                    raise TaskError(f"a sample carries one id, this one {len(ids)}")
                f.update(tok.build(env.get("task", ""), ids[0], f))
                f["@hop"] = int(f.get("@hop", 0)) + 1
                out = envelope(SAMPLE, env.get("task", ""), ids, fields=f)
                counters["items_out"] += 1
            except TaskError as e:
                out = envelope(REJECT, env.get("task", ""), ids, fields={
                    "seq": f.get("seq", -1), "row": f.get("row", -1),
                    "slot": f.get("slot", -1), "epoch": f.get("epoch", 0),
                    "split": f.get("split", "train"), "stage": tier, "reason": str(e)})
                counters["rejected"] += 1
            send(out)
            last_send = wait_from = time.monotonic()
            counters["busy_s"] += last_send - t0
        now = time.monotonic()
        if now - last_send >= HEARTBEAT_S:
            send(envelope(CONTROL, op="heartbeat"))
            last_send = now
        if now - last_stats >= 1.0:
            push_stats()
            last_stats = now
    push_stats()   # the final snapshot
    sock.close()
    stats.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
