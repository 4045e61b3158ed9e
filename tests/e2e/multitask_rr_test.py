#!/usr/bin/env python3
"""trainer.multitask = "round_robin" through launch, with real processes, on the committed
fixtures tests/data/stamps_caption_small.tsv (40 rows, 3 of them bad) and
stamps_vqa_small.tsv (12 rows), one task each:
  - every optimizer step saw every task: metrics.jsonl (log_every = 1) has a line of each
    task at each step, and there are as many steps as the longer task has batches;
  - the smaller task repeated by its own epochs (it delivered more training rows than
    its file holds, a whole number of epochs and a part);
  - the bad caption rows are rejected with their reasons and nothing is lost;
  - eval.json has both tasks.
"""
import json, math, os, subprocess, sys, tempfile

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")
DATA = os.path.join(SRC, "tests", "data")

PLAN = """
name = "mt_rr";
seed = 3;
data_dir = "%(data)s";
tasks = (
  { name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["stamps_caption_small.tsv"]; valid = ["stamps_caption_small.tsv"];
    columns = ["id", "img", "cap"]; batch_size = 8; max_rows = 40; epochs = 2; metric = "cider";
  },
  { name = "vqa";
    instruction = "[IMAGE:image] [TEXT:question] -> [TEXT:answer,closed_set]";
    train = ["stamps_vqa_small.tsv"]; valid = ["stamps_vqa_small.tsv"];
    columns = ["id", "image", "question", "answer"]; batch_size = 5; weight = 2.0;
    metric = "accuracy";
  }
);
model = { size = "nano"; image_size = 96; patch = 16; vocab_size = 300; };
trainer = { backend = "cpu"; lr = 2e-3; warmup = 2; log_every = 1; multitask = "round_robin"; };
stages = { image = { workers = 2; }; };
"""


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


with tempfile.TemporaryDirectory(prefix="ofa-mt-rr-") as tmp:
    plan = os.path.join(tmp, "mt_rr.conf")
    with open(plan, "w") as f:
        f.write(PLAN % {"data": DATA})
    rd = os.path.join(tmp, "run")
    p = subprocess.run([os.path.join(BIN, "launch"), "--run-dir", rd, plan],
                       capture_output=True, text=True, timeout=280)
    if p.returncode != 0:
        fail(f"launch exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}")
    summ = json.load(open(os.path.join(rd, "summary.json")))
    total = summ["total"]
    if total["lost"] != 0:
        fail(f"samples lost: {total}")
    # caption: 40 rows a file, 2 epochs of 5 batches (8 rows) = 10 rounds; vqa: 12 rows
    # in batches of 5 (3 an epoch: 5, 5, 2) repeats for those 10 rounds.
    rounds = math.ceil(40 / 8) * 2
    per_step = {}
    for line in open(os.path.join(rd, "metrics.jsonl")):
        r = json.loads(line)
        per_step.setdefault(r["step"], set()).add(r["task"])
    steps = sorted(per_step)
    if steps != list(range(1, rounds + 1)):
        fail(f"steps {steps}, want 1..{rounds} (one per round)")
    for s in steps:
        if per_step[s] != {"caption", "vqa"}:
            fail(f"step {s} saw tasks {sorted(per_step[s])}, want both")
    print(f"ok: {rounds} steps, each with a batch of caption and of vqa")
    ev = json.load(open(os.path.join(rd, "eval.json")))
    t = summ["tasks"]
    vqa_train = t["vqa"]["delivered"] + t["vqa"]["rejected"] - ev["vqa"]["n"]
    # 10 rounds of vqa batches: 3 epochs of (5 + 5 + 2) and one more batch of 5.
    if vqa_train != 3 * 12 + 5:
        fail(f"vqa trained on {vqa_train} rows, want 41 (its epochs repeated)")
    print(f"ok: vqa (12 rows) repeated its epochs: {vqa_train} training rows")
    cap_read = t["caption"]["read"]
    if t["caption"]["rejected"] < 3 * 3 or cap_read != 40 * 3:
        fail(f"caption: {t['caption']} (3 bad rows in 2 epochs and the validation pass)")
    rej = open(os.path.join(rd, "rejects.jsonl")).read()
    if "stamps_caption_small.tsv" not in rej:
        fail("rejects.jsonl does not name the bad rows' file")
    for task in ("caption", "vqa"):
        if task not in ev or ev[task]["n"] <= 0:
            fail(f"eval.json lacks {task}: {ev}")
    print(f"ok: eval.json: caption {ev['caption']['value']:.3f}, vqa {ev['vqa']['value']:.3f}; "
          f"{t['caption']['rejected']} caption rows rejected with reasons, lost 0")
