#!/usr/bin/env python3
"""Does the pipeline keep the trainer fed? For each image-worker count W it trains a
caption plan on base64 640x480 JPEG photos (the rows of bench_scaling.py) for one
epoch of --steps batches and prints, from the run's own metrics.jsonl, the trainer's samples/s and
the share of its time spent waiting for data (data_wait_s over the wall time of each
logged interval, the first intervals left out: start-up and BPE training), beside what
`launch top --once` suggests as worker counts from the same run's stats. The last line
names the fewest workers that keep the wait under 5% of the step time.

On the lent GPU machine (issue: keep the GPU fed, `base` model on the cuda backend):

  python3 bench/bench_feed.py --model base --backend cuda --size 384 --batch 32 \\
      --workers 2,4,8,12,15 --steps 300

On a CPU box it measures the same thing for the CPU trainer (which a 2-core machine
cannot starve):

  python3 bench/bench_feed.py [--workers 1,2] [--model nano] [--size 96] [--steps 200]
"""
import argparse, json, os, subprocess, sys, tempfile

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_scaling import make_rows  # noqa: E402  the same photo rows


def plan_text(train, valid, w, a):
    return f"""
name = "bench_feed";
seed = 1;
tasks = ( {{ name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"]; valid = ["{valid}"]; columns = ["id", "img", "cap"];
    batch_size = {a.batch}; epochs = 1; image_size = {a.size}; }} );
model = {{ size = "{a.model}"; vocab_size = 600; image_size = {a.size};
          max_src_len = {(a.size // 16) ** 2 + 64}; }};
trainer = {{ backend = "{a.backend}"; log_every = {a.log_every}; eval_every = 0; }};
stages = {{ image = {{ workers = {w}; }}; }};
"""


def run(a, tmp, train, valid, w):
    plan = os.path.join(tmp, f"feed{w}.conf")
    open(plan, "w").write(plan_text(train, valid, w, a))
    rd = os.path.join(tmp, f"run{w}")
    p = subprocess.run([os.path.join(a.bin, "launch"), "--run-dir", rd, plan],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"launch failed with {w} workers:\n{p.stderr[-3000:]}")
    lines = [json.loads(l) for l in open(os.path.join(rd, "metrics.jsonl"))
             if '"samples_per_s"' in l]
    if len(lines) < a.skip + 2:
        sys.exit(f"{len(lines)} metrics lines with {w} workers: raise --steps")
    wall = wait = 0.0
    for prev, cur in zip(lines[a.skip:], lines[a.skip + 1:]):
        wall += cur["time"] - prev["time"]
        wait += cur["data_wait_s"]
    rate = sum(l["samples_per_s"] for l in lines[a.skip + 1:]) / (len(lines) - a.skip - 1)
    top = subprocess.run([os.path.join(a.bin, "launch"), "top", "--once", rd],
                         capture_output=True, text=True).stdout
    sugg = [l.strip() for l in top.splitlines() if l.strip().startswith("stages.")]
    return rate, wait / max(wall, 1e-9), "; ".join(sugg) or "(none)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--skip", type=int, default=2, help="first metrics lines left out")
    ap.add_argument("--bin", default=os.path.join(SRC, "build/bin"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofa-feed-") as tmp:
        train, valid = os.path.join(tmp, "train.tsv"), os.path.join(tmp, "valid.tsv")
        make_rows(train, a.steps * a.batch)   # one epoch of --steps batches
        make_rows(valid, 32)
        print(f"caption, {a.model} on {a.backend}, {a.size} px, batch {a.batch}, {a.steps} steps; "
              f"{os.cpu_count()} cores")
        print(f"{'W':>3} {'trainer samples/s':>18} {'data wait':>10}  launch top suggests")
        enough = None
        for w in [int(x) for x in a.workers.split(",")]:
            rate, share, sugg = run(a, tmp, train, valid, w)
            print(f"{w:3d} {rate:18.1f} {100 * share:9.1f}%  {sugg}", flush=True)
            if enough is None and share < 0.05:
                enough = w
        print(f"fewest workers with the wait under 5% of the time: "
              f"{enough if enough is not None else 'none of those tried'}")


if __name__ == "__main__":
    main()
