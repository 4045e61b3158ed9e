#!/usr/bin/env python3
"""The README's main job as a test: configs/caption_vqa.conf trains the nano model on the
real stamps_caption and stamps_vqa datasets through the whole pipeline (launch, real
processes), and then:
  - every row read is delivered (lost 0),
  - each task's training loss falls clearly (last logged loss < half the first),
  - the model is evaluated during training (trainer.eval_every) and at the end, each
    evaluation in eval_history.jsonl, the last one equal to eval.json,
  - eval.json beats the best-constant baseline computed in the same run by a clear margin
    (caption CIDEr-D at least 3x the constant caption's, VQA accuracy at least 2x the
    constant answer's).
"""
import json, os, subprocess, sys, tempfile

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


with tempfile.TemporaryDirectory(prefix="ofa-main-") as tmp:
    rd = os.path.join(tmp, "run")
    p = subprocess.run([os.path.join(BIN, "launch"), "--run-dir", rd,
                        os.path.join(SRC, "configs/caption_vqa.conf")],
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        fail(f"launch exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}")
    total = json.load(open(os.path.join(rd, "summary.json")))["total"]
    if total["lost"] != 0 or total["delivered"] != total["read"]:
        fail(f"samples lost: {total}")
    losses = {}
    peak = []
    for line in open(os.path.join(rd, "metrics.jsonl")):
        r = json.loads(line)
        losses.setdefault(r["task"], []).append(r["loss"])
        peak.append((r.get("peak_mem_kind"), r.get("peak_mem_bytes")))
    # The cpu backend reports the trainer's peak resident set, which only grows.
    if any(k != "rss" or not b or b < (1 << 20) for k, b in peak) or \
            [b for _, b in peak] != sorted(b for _, b in peak):
        fail(f"metrics.jsonl: peak memory missing or shrinking: {peak[:3]} ... {peak[-3:]}")
    print(f"ok: peak trainer memory {peak[-1][1] / 1048576:.1f} MiB ({peak[-1][0]})")
    ev = json.load(open(os.path.join(rd, "eval.json")))
    for task, factor in (("caption", 3.0), ("vqa", 2.0)):
        l = losses.get(task)
        if not l or not l[-1] < 0.5 * l[0]:
            fail(f"{task}: loss did not fall clearly: first {l[0] if l else None}, last {l[-1] if l else None}")
        e = ev[task]
        if not e["value"] >= factor * e["baseline"]:
            fail(f"{task}: {e['metric']} {e['value']:.3f} is not {factor}x the baseline {e['baseline']:.3f}")
        print(f"ok: {task}: loss {l[0]:.2f} -> {l[-1]:.2f}; {e['metric']} {e['value']:.3f} vs "
              f"best constant {e['baseline']:.3f} ({e['baseline_output']!r}), n={e['n']}")
    hist = [json.loads(l) for l in open(os.path.join(rd, "eval_history.jsonl"))]
    steps = [h["step"] for h in hist]
    if len(hist) < 4 or steps != sorted(steps) or hist[-1]["eval"] != ev:
        fail(f"eval_history.jsonl: steps {steps}; the last entry must equal eval.json")
    print(f"ok: evaluated at steps {steps}; caption CIDEr-D " +
          ", ".join(f"{h['eval']['caption']['value']:.2f}" for h in hist))
    print(f"ok: {total['delivered']} samples delivered, lost 0")
