#!/usr/bin/env python3
"""The new modalities end to end, a little: for each plan named on the command line
(configs/NAME.conf), build its dataset with scripts/build_data.py into a temporary folder,
train the plan's nano model for one short epoch through the real pipeline (launch, real
processes) and check:
  - every row read is delivered (lost 0, rejected 0: the builder's rows all decode),
  - the training loss falls (the last logged loss below the first),
  - eval.json holds the task with the plan's metric, a finite value, the best-constant
    baseline with its output (for text_to_phone a one-symbol phoneme) and n = the valid
    rows.
The full runs that beat the baseline are scripts/modality_experiment.sh (label long).

    modalities_test.py [--rows N] [--epochs E] [--data DIR] PLAN...   (PLAN: asr, ...)
"""
import argparse, json, math, os, re, subprocess, sys, tempfile, time

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def plan_text(name, data_dir, rows, epochs):
    """configs/NAME.conf with its data in data_dir, max_rows training rows and epochs."""
    text = open(os.path.join(SRC, "configs", name + ".conf"), encoding="utf-8").read()
    text, n = re.subn(r'data_dir = "[^"]*";', 'data_dir = "%s";' % data_dir, text)
    if n != 1:
        fail("configs/%s.conf: no data_dir line" % name)
    text, n = re.subn(r"epochs = \d+;", "epochs = %d; max_rows = %d;" % (epochs, rows), text)
    if n != 1:
        fail("configs/%s.conf: no epochs line in its one task" % name)
    return text


def dataset_of(text, name):
    m = re.search(r'dataset = "([^"]+)";', text)
    if not m:
        fail("configs/%s.conf names no dataset" % name)
    return m.group(1)


def run_one(name, tmp, rows, epochs, data):
    text = plan_text(name, data, rows, epochs)
    ds = dataset_of(text, name)
    t0 = time.time()
    b = subprocess.run(["/usr/bin/python3", os.path.join(SRC, "scripts/build_data.py"), ds,
                        "--out", data], capture_output=True, text=True, timeout=120)
    if b.returncode != 0:
        fail("%s: build_data.py %s exited %d:\n%s%s" % (name, ds, b.returncode, b.stdout, b.stderr))
    tb = time.time() - t0
    man = json.load(open(os.path.join(data, ds, "manifest.json")))
    nvalid = man["splits"]["valid"]["rows"]
    plan = os.path.join(tmp, name + ".conf")
    with open(plan, "w", encoding="utf-8") as f:
        f.write(text)
    rd = os.path.join(tmp, "run-" + name)
    t0 = time.time()
    p = subprocess.run([os.path.join(BIN, "launch"), "--run-dir", rd, plan],
                       capture_output=True, text=True, timeout=600)
    tr = time.time() - t0
    if p.returncode != 0:
        logs = ""
        ld = os.path.join(rd, "logs")
        for lf in sorted(os.listdir(ld)) if os.path.isdir(ld) else []:
            logs += "--- %s\n%s\n" % (lf, open(os.path.join(ld, lf), errors="replace").read()[-1500:])
        fail("%s: launch exited %d:\n%s\n%s\n%s" % (name, p.returncode, p.stdout[-2000:],
                                                    p.stderr[-2000:], logs))
    total = json.load(open(os.path.join(rd, "summary.json")))["total"]
    if total["lost"] != 0 or total["rejected"] != 0 or total["delivered"] != total["read"]:
        fail("%s: not every row was delivered: %s" % (name, total))
    want = min(rows, man["splits"]["train"]["rows"]) * epochs + nvalid
    if total["read"] != want:
        fail("%s: read %d rows, expected %d (train rows x epochs + valid rows)"
             % (name, total["read"], want))
    losses = [json.loads(l)["loss"] for l in open(os.path.join(rd, "metrics.jsonl"))]
    if len(losses) < 2 or not losses[-1] < losses[0]:
        fail("%s: loss did not fall: %s" % (name, losses[:3] + ["..."] + losses[-3:]))
    ev = json.load(open(os.path.join(rd, "eval.json")))
    resolved = open(os.path.join(rd, "plan.resolved.conf"), encoding="utf-8").read()
    metric = re.search(r'metric = "([^"]+)";', resolved).group(1)
    if len(ev) != 1:
        fail("%s: eval.json has %d tasks: %s" % (name, len(ev), list(ev)))
    task, e = next(iter(ev.items()))
    if e["metric"] != metric.split("/")[0]:
        fail("%s: eval.json metric %s, the plan says %s" % (name, e["metric"], metric))
    for k in ("value", "baseline"):
        if not isinstance(e.get(k), (int, float)) or not math.isfinite(e[k]) or e[k] < 0:
            fail("%s: eval.json %s is %r" % (name, k, e.get(k)))
    if not e.get("baseline_output") and e.get("baseline_kind", "").startswith("constant"):
        fail("%s: eval.json names no constant output for its baseline: %s" % (name, e))
    if e["n"] != nvalid:
        fail("%s: eval.json n = %d, the valid split has %d rows" % (name, e["n"], nvalid))
    print("ok: %s (%s): built in %.1f s, trained %d rows in %.1f s, delivered %d, lost 0; "
          "loss %.2f -> %.2f; %s %.3f (best constant %.3f), n=%d"
          % (name, ds, tb, total["read"], tr, total["delivered"], losses[0], losses[-1],
             e["metric"], e["value"], e["baseline"], e["n"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=320, help="training rows per epoch")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", help="dataset folder (default: a temporary one; the builder "
                    "is idempotent, so a built data/ is reused as it is)")
    ap.add_argument("plans", nargs="+")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofa-mod-") as tmp:
        for name in a.plans:
            run_one(name, tmp, a.rows, a.epochs,
                    os.path.abspath(a.data) if a.data else os.path.join(tmp, "data"))


if __name__ == "__main__":
    main()
