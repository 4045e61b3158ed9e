#!/usr/bin/env python3
"""The Python stage's reader of arena descriptors (stages/python/ofa_text_tokenize.py,
field_bytes) against a real arena made by the C library (arena_put): the good slot's
bytes are read exactly and the slot stays in use with its name in place (a reader never
releases or unlinks); a stale generation, a wrong length, an offset that is not a slot, a
name that is not an arena's and a bad gen are each refused with the reason.

  python_arena_test.py ARENA_PUT FILE"""
import json, os, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "stages", "python"))
import ofa_text_tokenize as py  # noqa: E402


def refused(desc, want):
    try:
        py.field_bytes("img", {"data": desc}, [b""])
    except ValueError as e:
        if not any(w in str(e) for w in want.split("|")):
            sys.exit(f"FAIL: {desc}: reason {e!s} does not say {want!r}")
        print(f"ok: refused: {e}")
        return
    sys.exit(f"FAIL: {desc} was accepted")


def main():
    put, path = sys.argv[1], sys.argv[2]
    want = open(path, "rb").read()
    p = subprocess.Popen([put, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        d = json.loads(p.stdout.readline())
        good, stale = d["good"], d["stale"]
        got = py.field_bytes("img", {"data": dict(good)}, [b""])
        if got != want:
            sys.exit(f"FAIL: {len(got)} bytes read, not the file's {len(want)}")
        if not os.path.exists("/dev/shm" + good["name"]):
            sys.exit("FAIL: the reader unlinked the arena")
        print(f"ok: {len(got)} bytes read from {good['name']} at offset {good['offset']}")
        refused(stale, "released")
        refused(dict(good, len=good["len"] - 1), "the slot holds")
        refused(dict(good, offset=good["offset"] + 1), "not a slot")
        refused(dict(good, offset=good["offset"] + 64), "not a slot|stale")   # inside the payload
        refused(dict(good, name="/ofa-x"), "is not /ofa-arena-")
        refused(dict(good, gen=0), "bad gen")
        refused(dict(good, gen=True), "bad gen")
    finally:
        out, _ = p.communicate("done\n", timeout=10)
    if p.returncode != 0 or out.strip() != "held":
        sys.exit(f"FAIL: after the reads the good slot is not in use: {out.strip()}")
    print("ok: the slot is still in use after every read")


if __name__ == "__main__":
    main()
