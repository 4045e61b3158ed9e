#!/usr/bin/env python3
"""End-to-end test of the shared-memory arenas (plan key shm_arena, docs/protocol.md):
the image workers put each sample's pixels into a slot of their own arena and only the
descriptor crosses the sockets; the broker releases every slot once.

A grounding task ([IMAGE] + [TEXT] -> [BOX]) on real 640x480 photos at 160x160 (76,800
bytes of pixels a sample, above the 16 KiB the workers use an arena from; the source puts
each row's JPEG bytes in its own arena), with a corrupt JPEG cut to 3,000 bytes (rejected
by the image tier; inline, no slot) and two malformed boxes (rejected by the
tokenize tier after the image tier made their slots), through launch with a sink that
writes a digest of every batch's bytes:

  run A: shm_arena = "off"                       (every tensor as a frame)
  run B: shm_arena = "auto" (on: one host)       digest == A's; every slot the workers
         made (the source's JPEGs, the workers' pixels) is released by the broker or still
         named by an unacknowledged message at
         the end (arena_released + arena_unacked == arena_slots), none failed; an arena
         left by a launch that died is removed at the start, the run's own at the end;
  run E: a text-only plan: no process makes an arena (none reserves shared memory);
  run C: as B, with 60 epochs and image.1 stopped, then SIGKILLed while it holds samples
         (the broker re-dispatches them; those it had answered lie in its arena): the digest
         equals that of the same plan with arenas off, nothing lost.
"""
import base64, json, os, signal, subprocess, sys, tempfile, time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")
PHOTOS = ["squirrel_640.jpg", "fruits_640.jpg", "messi_640.jpg", "gray_640.jpg"]
CAPS = ["the squirrel", "the fruits", "the player", "the gray photo"]
ROWS, BAD_JPEG, BAD_BOX = 40, {11}, {5, 17}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def make_tsv(path):
    b64 = [base64.urlsafe_b64encode(open(os.path.join(SRC, "tests/data/images", p), "rb").read())
           .decode().rstrip("=") for p in PHOTOS]
    with open(path, "w") as f:
        for i in range(ROWS):
            k = i % 4
            img = b64[k]
            if i in BAD_JPEG:   # a JPEG cut after its first 3,000 bytes
                raw = base64.urlsafe_b64decode(img + "=" * (-len(img) % 4))[:3000]
                img = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            x = 40 + 13 * i
            box = f"{x},30,{x + 200},{300}" if i not in BAD_BOX else f"{x},30,banana,300"
            f.write(f"{i}\t{img}\t{CAPS[k]}\t{box}\n")


def plan(tmp, name, arena, epochs, workers):
    tsv = os.path.join(tmp, "rows.tsv")
    p = os.path.join(tmp, name + ".conf")
    open(p, "w").write(f"""
name = "{name}";
seed = 3;
shm_arena = "{arena}";
tasks = ( {{ name = "ground";
    instruction = "[IMAGE:img] which region does the text \\" [TEXT:cap] \\" describe? -> [BOX:region]";
    train = ["{tsv}"]; valid = ["{tsv}"]; columns = ["id", "img", "cap", "region"];
    batch_size = 6; epochs = {epochs}; }} );
model = {{ size = "nano"; vocab_size = 300; image_size = 160; max_src_len = 200; num_bins = 16; }};
trainer = {{ consumer = "sink"; }};
stages = {{
  image = {{ workers = {workers}; credits = 4; }};
  sink = {{ program = ["ofa-sink", "--digest", "{tmp}/{name}.digest"]; }};
}};
""")
    return p


def launch(tmp, name, kill_after=None):
    rd = os.path.join(tmp, "run-" + name)
    out = open(os.path.join(tmp, name + ".out"), "w")
    p = subprocess.Popen([os.path.join(BIN, "launch"), "--run-dir", rd,
                          os.path.join(tmp, name + ".conf")], stdout=out, stderr=out)
    if kill_after is not None:
        end, killed = time.time() + 60, False
        while time.time() < end and p.poll() is None and not killed:
            time.sleep(0.02)
            try:
                st = json.load(open(os.path.join(rd, "stages.json")))["processes"]
                pids = json.load(open(os.path.join(rd, "pids.json")))
            except (OSError, ValueError, KeyError):
                continue
            if st.get("image.1", {}).get("items_in", 0) > kill_after and "image.1" in pids:
                try:
                    # Stopped first, so that it surely holds samples (the broker keeps
                    # sending it up to its credits) when it is killed.
                    os.kill(pids["image.1"], signal.SIGSTOP)
                    time.sleep(0.5)
                    os.kill(pids["image.1"], signal.SIGKILL)
                except ProcessLookupError:
                    break   # it ended first: the run was too short
                killed = True
        if not killed:
            p.kill()
            fail(f"{name}: could not kill image.1 in time")
    if p.wait() != 0:
        print(open(os.path.join(tmp, name + ".out")).read()[-3000:])
        fail(f"launch of {name} exited {p.returncode}")
    s = json.load(open(os.path.join(rd, "summary.json")))["total"]
    st = json.load(open(os.path.join(rd, "stages.json")))["processes"]
    return p.pid, s, st


def arenas_of(pid):
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"ofa-arena-r{pid}-")]


def main():
    tmp = tempfile.mkdtemp(prefix="ofa-arena-e2e-")
    make_tsv(os.path.join(tmp, "rows.tsv"))
    plan(tmp, "A", "off", 3, 2)
    plan(tmp, "B", "auto", 3, 2)
    plan(tmp, "C", "auto", 60, 3)
    plan(tmp, "D", "off", 60, 3)

    # An arena left by a launch that is gone (a pid that just exited).
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"/dev/shm/ofa-arena-r{dead.pid}-{dead.pid}-0"
    open(stale, "wb").write(b"\0" * 4096)

    _, sa, sta = launch(tmp, "A")
    bpid, sb, stb = launch(tmp, "B")
    # 3 epochs of 40 rows + 40 valid rows; 3 bad rows each pass.
    want = {"read": 4 * ROWS, "delivered": 4 * (ROWS - 3), "rejected": 4 * 3, "lost": 0}
    for name, s in (("A", sa), ("B", sb)):
        got = {k: s[k] for k in want}
        if got != want:
            fail(f"run {name}: {got}, want {want}")
    if open(os.path.join(tmp, "A.digest")).read() != open(os.path.join(tmp, "B.digest")).read():
        fail("batches differ between shm_arena off and on")
    nbatches = len(open(os.path.join(tmp, "A.digest")).read().splitlines())

    if any(v.get("arena_slots", 0) for v in sta.values()):
        fail("run A (shm_arena off) used an arena")
    imgs = [v for k, v in stb.items() if k.startswith("image.")]
    slots = sum(v.get("arena_slots", 0) for v in imgs)
    made = sum(v.get("items_out", 0) for v in imgs)
    full = sum(v.get("arena_full", 0) for v in imgs)
    br = stb["broker"]
    released, unacked = br.get("arena_released", 0), br.get("arena_unacked", 0)
    failed = br.get("arena_release_failed", 0)
    src_slots = stb["source"].get("arena_slots", 0)   # the rows' JPEG bytes
    print(f"run B: {made} images decoded, {slots} slots, {full} sent as frames; the source put "
          f"{src_slots:.0f} JPEGs in slots; broker released {released:.0f}, {unacked:.0f} still "
          f"named at the end, {failed:.0f} failed")
    if slots == 0 or slots != made or full != 0:
        fail("every decoded image must go through a slot")
    if src_slots != 4 * (ROWS - len(BAD_JPEG)):
        fail("every good JPEG (the cut one is under 16 KiB: inline) must go through a slot")
    if released + unacked != slots + src_slots or failed:
        fail("slots not accounted for: released + unacked != slots, or failed releases")
    # (A rejected sample's slots are in neither kept message nor unacked set: the equality
    # above holds only if the broker released them.)
    bslots = stb["batcher"].get("arena_slots", 0)
    print(f"run B: the batcher built {bslots:.0f} batches' pixels in its arena")
    if bslots < nbatches - 2:
        fail("the batches' pixels must be built in the batcher's arena (the sink reads them there)")
    blog = open(os.path.join(tmp, "run-B", "logs", "batcher.log")).read()
    if "not released" in blog:
        fail("the batcher could not release a batch's slot:\n" + blog[-2000:])
    if os.path.exists(stale):
        fail(f"{stale}, left by a launch that is gone, was not removed")
    if arenas_of(bpid):
        fail(f"run B left its arenas: {arenas_of(bpid)}")

    # A text-only plan has no large tensor: no process makes an arena.
    with open(os.path.join(tmp, "text.tsv"), "w") as f:
        for i in range(40):
            f.write(f"{i}\tthe number {i} spelt out\t{i}\n")
    open(os.path.join(tmp, "E.conf"), "w").write(f"""
name = "E"; seed = 1;
tasks = ( {{ name = "spell"; instruction = "[TEXT:src] -> [TEXT:tgt]";
    train = ["{tmp}/text.tsv"]; columns = ["id", "src", "tgt"]; batch_size = 8; }} );
model = {{ size = "nano"; vocab_size = 300; }};
trainer = {{ consumer = "sink"; }};
""")
    epid, se, ste = launch(tmp, "E")
    out_e = open(os.path.join(tmp, "E.out")).read()
    if se["delivered"] != 40 or "shared-memory arena" in out_e or any(v.get("arena_slots") for v in ste.values()):
        fail(f"text-only run: {se}; it made arenas:\n{out_e[-1500:]}")

    # A worker killed while holding samples: same batches as without arenas.
    _, sd, _ = launch(tmp, "D")
    cpid, sc, stc = launch(tmp, "C", kill_after=100)
    if sc["lost"] or sc["delivered"] != sd["delivered"] or not sc["redispatched"]:
        fail(f"run C: {sc} (run D: {sd}); want nothing lost and something re-dispatched")
    if open(os.path.join(tmp, "C.digest")).read() != open(os.path.join(tmp, "D.digest")).read():
        fail("batches differ after an image worker with an arena was killed")
    if stc["broker"].get("arena_release_failed", 0):
        fail("run C: failed releases")
    if arenas_of(cpid):
        fail(f"run C left its arenas (the killed worker's too): {arenas_of(cpid)}")
    nc = len(open(os.path.join(tmp, "C.digest")).read().splitlines())
    print(f"ok: {nbatches} batches identical with shm_arena off and on; {nc} batches identical "
          f"with an image worker killed ({sc['redispatched']} re-dispatched); every slot "
          "released once; no arena left behind")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
