#!/usr/bin/env python3
"""Worker-scaling benchmark of the image pipeline against torch's DataLoader.

For each worker count W it runs, in the same call:
  - ours: `launch` on a caption plan (source -> W image workers -> tokenize -> batcher ->
    sink) over a TSV of base64 640x480 JPEG photos resized to 384x384 (OFA's caption
    transform), and reads the sink's steady-state rate from stages.json (samples over
    the sink's first-to-last batch interval, so process start and BPE training are left
    out);
  - the reference: torch.utils.data.DataLoader with W workers over the same rows and the
    same transform (base64 decode, PIL open, RGB, Resize((384, 384), BICUBIC), ToTensor,
    Normalize(0.5, 0.5)), timed from the first batch to the last (worker start left out),
    run by /usr/bin/python3 (python3-torch, python3-torchvision, python3-pil).
It prints samples/s of each, the ratio, and each one's scaling efficiency against W times
its own 1-worker rate. Efficiency beyond the machine's core count measures the machine,
not the code: the figures print the core count beside them.

With --arena both (the default) each worker count runs twice, with the shared-memory
arenas on (the default plan: pixels in each worker's arena, descriptors on the sockets)
and off (pixels as message frames through the broker), and prints beside the rates the
broker's CPU time per sample and that of every process but the image workers (all
threads, ZeroMQ's I/O threads included: what moving the pixels costs), and the share of
images that went through a slot.

With --fuse-tokenize the image workers tokenize too (plan key fuse_tokenize): no tokenize
tier, two messages fewer per sample through the broker.

  bench/bench_scaling.py [--workers 1,2,4,8,12,15] [--rows 2000] [--size 384] [--ref-seconds 10] [--bin build/bin] [--arena both|auto|on|off] [--fuse-tokenize]
"""
import argparse, base64, json, os, subprocess, sys, tempfile, time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PHOTOS = ["squirrel_640.jpg", "fruits_640.jpg", "messi_640.jpg", "gray_640.jpg"]

REF = r'''
import base64, io, sys, time
import torch
from PIL import Image
from torchvision import transforms
torch.set_num_threads(1)
path, workers, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [l.split("\t") for l in open(path).read().splitlines() if l]
tf = transforms.Compose([transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
                         transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
class Rows(torch.utils.data.Dataset):
    def __len__(self): return len(rows)
    def __getitem__(self, i):
        b = rows[i][1]
        img = Image.open(io.BytesIO(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)))).convert("RGB")
        return tf(img)
def init(_): torch.set_num_threads(1)
dl = torch.utils.data.DataLoader(Rows(), batch_size=16, num_workers=workers, worker_init_fn=init)
n, t0 = 0, None
for x in dl:
    if t0 is None:
        t0 = time.perf_counter(); continue     # worker start-up and the first batch left out
    n += x.shape[0]
    if time.perf_counter() - t0 > float(sys.argv[4]):
        break
print(n / (time.perf_counter() - t0))
'''


def plan_text(train, valid, workers, size, arena="auto", fuse=False):
    return f"""
name = "bench_scaling";
seed = 1;
shm_arena = "{arena}";
fuse_tokenize = {"true" if fuse else "false"};
tasks = ( {{ name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"]; valid = ["{valid}"]; columns = ["id", "img", "cap"];
    batch_size = 16; epochs = 1; image_size = {size}; }} );
model = {{ size = "nano"; vocab_size = 600; image_size = {size};
          max_src_len = {(size // 16) ** 2 + 64}; }};
trainer = {{ consumer = "sink"; }};
stages = {{ image = {{ workers = {workers}; }}; tokenize = {{ workers = 1; }}; }};
"""


def make_rows(path, n):
    caps = ["a squirrel on a branch", "fruits on a table", "a football player", "a gray photo"]
    b64 = []
    for name in PHOTOS:
        p = os.path.join(SRC, "tests/data/images", name)
        b64.append(base64.urlsafe_b64encode(open(p, "rb").read()).decode().rstrip("="))
    with open(path, "w") as f:
        for i in range(n):
            k = i % len(b64)
            f.write(f"{i}\t{b64[k]}\t{caps[k]}\n")


def ours(binq, tmp, train, valid, w, size, arena, fuse=False):
    plan = os.path.join(tmp, f"plan{w}{arena}.conf")
    open(plan, "w").write(plan_text(train, valid, w, size, arena, fuse))
    rd = os.path.join(tmp, f"run{w}{arena}")
    p = subprocess.run([os.path.join(binq, "launch"), "--run-dir", rd, plan],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"launch failed ({w} workers):\n{p.stderr[-3000:]}")
    summ = json.load(open(os.path.join(rd, "summary.json")))["total"]
    if summ["lost"] != 0:
        sys.exit(f"lost samples with {w} workers: {summ}")
    if summ.get("rejected", 0):
        sys.exit(f"rejected samples with {w} workers: {summ} (see {rd}/rejects.jsonl)")
    st = json.load(open(os.path.join(rd, "stages.json")))["processes"]
    img_busy = sum(s.get("busy_s", 0) for k, s in st.items() if k.startswith("image"))
    img_items = sum(s.get("items_in", 0) for k, s in st.items() if k.startswith("image"))
    # Steady rate from the per-second timeline: the sink's samples between its first
    # snapshot with samples and its last, over the snapshots' own clock.
    snaps = [json.loads(l) for l in open(os.path.join(rd, "stats.jsonl"))]
    snaps = [s for s in snaps if s.get("proc") == "sink" and s.get("samples", 0) > 0]
    if len(snaps) < 2 or snaps[-1]["time"] - snaps[0]["time"] < 1.0:
        sys.exit(f"run too short to measure with {w} workers: raise --rows")
    rate = (snaps[-1]["samples"] - snaps[0]["samples"]) / (snaps[-1]["time"] - snaps[0]["time"])
    # CPU per sample (every thread of the process, ZeroMQ's I/O threads included): the
    # broker's, and the whole pipeline's but the image workers'.
    n = max(summ["delivered"], 1)
    broker_us = 1e6 * st["broker"].get("cpu_s", 0) / n
    hubs_us = 1e6 * sum(s.get("cpu_s", 0) for k, s in st.items() if not k.startswith("image")) / n
    slots = sum(s.get("arena_slots", 0) for k, s in st.items() if k.startswith("image"))
    return rate, img_items / max(img_busy, 1e-9), broker_us, hubs_us, slots / max(img_items, 1)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4,8,12,15")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--ref-seconds", type=float, default=10.0)
    ap.add_argument("--bin", default=os.path.join(SRC, "build/bin"))
    ap.add_argument("--arena", default="both", choices=["both", "auto", "on", "off"],
                    help="shm_arena of our runs: both = on (auto) and off, side by side")
    ap.add_argument("--fuse-tokenize", action="store_true",
                    help="fuse_tokenize = true in our plans (the image workers tokenize)")
    a = ap.parse_args()
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="ofa-scaling-") as tmp:
        train, valid = os.path.join(tmp, "train.tsv"), os.path.join(tmp, "valid.tsv")
        make_rows(train, a.rows)
        make_rows(valid, 32)
        print(f"{a.rows} rows of 640x480 JPEG photos -> {a.size}x{a.size}; {cores} cores")
        modes = ["auto", "off"] if a.arena == "both" else [a.arena]
        print(f"{'W':>3} {'arena':>5} {'ours/s':>9} {'eff':>5} {'torch/s':>9} {'eff':>5} {'ratio':>6} "
              f"{'img/s/worker':>12} {'broker us/sample':>16} {'hubs us/sample':>14} {'in slots':>8}")
        base_o, base_t = {}, None
        for w in [int(x) for x in a.workers.split(",")]:
            t = float(subprocess.run(["/usr/bin/python3", "-c", REF, train, str(w), str(a.size), str(a.ref_seconds)],
                                     capture_output=True, text=True, check=True).stdout)
            if base_t is None:
                base_t = t / w
            for m in modes:
                o, per, broker_us, hubs_us, frac = ours(a.bin, tmp, train, valid, w, a.size, m,
                                                        a.fuse_tokenize)
                base_o.setdefault(m, o / w)
                print(f"{w:3d} {'on' if m == 'auto' else m:>5} {o:9.1f} {o / (base_o[m] * w):5.2f} {t:9.1f} "
                      f"{t / (base_t * w):5.2f} {o / t:6.2f} {per:12.0f} {broker_us:16.0f} {hubs_us:14.0f} "
                      f"{100 * frac:7.0f}%" + ("   (more workers than cores)" if w > cores else ""),
                      flush=True)


if __name__ == "__main__":
    main()
