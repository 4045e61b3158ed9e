#!/usr/bin/env python3
"""Pipeline benchmark: the image-caption plan (configs/pipeline_caption.conf layout) on the
real stamps_caption data through source -> image workers -> tokenize -> batcher -> sink,
timed end to end, with per-stage figures from stages.json; and, in the same run, the
reference: the same rows through OFA's Python preprocessing on one core (base64 decode,
PIL open, RGB, resize to 96x96 bicubic, ToTensor, Normalize(0.5, 0.5)) with
/usr/bin/python3 (python3-pil, python3-torchvision).

  bench/bench_pipeline.py [--workers 1,2,4] [--epochs 4] [--bin build/bin]
"""
import argparse, json, os, subprocess, sys, tempfile, time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

REF = r'''
import base64, io, sys, time
from PIL import Image
import torch
torch.set_num_threads(1)
from torchvision import transforms
tf = transforms.Compose([transforms.Resize((96, 96), interpolation=transforms.InterpolationMode.BICUBIC),
                         transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines() if l]
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 3.0:
    for r in rows[:500]:
        img = Image.open(io.BytesIO(base64.urlsafe_b64decode(r[1] + "=" * (-len(r[1]) % 4)))).convert("RGB")
        x = tf(img)
        n += 1
print(n / (time.perf_counter() - t0))
'''


def plan_text(train, valid, workers, epochs):
    return f"""
name = "bench_pipeline";
seed = 1;
tasks = ( {{ name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"]; valid = ["{valid}"]; columns = ["id", "img", "cap"];
    batch_size = 16; epochs = {epochs}; }} );
model = {{ size = "nano"; vocab_size = 1000; }};
trainer = {{ consumer = "sink"; }};
stages = {{ image = {{ workers = {workers}; }}; tokenize = {{ workers = 1; }}; }};
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--bin", default=os.path.join(SRC, "build/bin"))
    a = ap.parse_args()
    data = os.path.join(SRC, "data/stamps_caption")
    train, valid = os.path.join(data, "train.tsv"), os.path.join(data, "valid.tsv")
    if not os.path.exists(train):
        sys.exit(f"{train} missing: run `launch data stamps_caption` first")
    ref = float(subprocess.run(["/usr/bin/python3", "-c", REF, train], capture_output=True,
                               text=True, check=True).stdout)
    print(f"reference: PIL + torchvision preprocessing, 1 core: {ref:8.1f} samples/s")
    print(f"{'workers':>7} {'samples':>8} {'wall s':>7} {'samples/s':>10} {'x ref':>6}  per stage (items/s busy, busy fraction)")
    for w in [int(x) for x in a.workers.split(",")]:
        with tempfile.TemporaryDirectory(prefix="ofa-bench-") as tmp:
            plan = os.path.join(tmp, "plan.conf")
            open(plan, "w").write(plan_text(train, valid, w, a.epochs))
            rd = os.path.join(tmp, "run")
            t0 = time.perf_counter()
            p = subprocess.run([os.path.join(a.bin, "launch"), "--run-dir", rd, plan],
                               capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                sys.exit(f"launch failed:\n{p.stderr}")
            summ = json.load(open(os.path.join(rd, "summary.json")))["total"]
            st = json.load(open(os.path.join(rd, "stages.json")))["processes"]
            # Time from the first to the last stats snapshot of the sink is the pipeline's
            # run time without set-up (BPE training, process start).
            per = []
            for name in sorted(st):
                s = st[name]
                if s.get("busy_s", 0) > 0 and s.get("items_in", 0) > 0:
                    per.append(f"{name} {s['items_in'] / s['busy_s']:.0f}/s {s['busy_s'] / max(1e-9, s['busy_s'] + s.get('wait_s', 0)):.2f}")
            n = summ["delivered"]
            print(f"{w:7d} {n:8d} {wall:7.2f} {n / wall:10.1f} {n / wall / ref:6.2f}  " + ", ".join(per))
            if summ["lost"] != 0:
                sys.exit(f"lost samples: {summ}")


if __name__ == "__main__":
    main()
