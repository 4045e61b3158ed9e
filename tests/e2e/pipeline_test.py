#!/usr/bin/env python3
"""End-to-end tests of the pipeline through `launch` with real processes.

  pipeline_test.py rejects   fixture TSV with a corrupt JPEG, a row with a missing column
                             and invalid base64 (plus a valid split): every good row is
                             delivered exactly once, each bad one is in rejects.jsonl with
                             its reason, lost == 0.
  pipeline_test.py kill      the real stamps_caption dataset (several epochs) through 4
                             image workers; one image worker is SIGKILLed while it holds
                             items: the broker re-dispatches them (redispatched > 0), the
                             worker is restarted, and the SET of delivered (id, epoch)
                             equals the set read minus the rejected ones.

Needs only the Python standard library. Paths come from OFA_SOURCE_DIR / OFA_BINARY_DIR
(set by CTest) or default to the checkout and build/.
"""
import json, os, signal, subprocess, sys, tempfile, time

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")
LAUNCH = os.path.join(BIN, "launch")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def write_plan(path, train, valid, epochs, workers, extra=""):
    with open(path, "w") as f:
        f.write(f"""
name = "e2e";
seed = 3;
tasks = (
  {{
    name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"];
    valid = ["{valid}"];
    columns = ["id", "img", "cap"];
    batch_size = 8;
    epochs = {epochs};
  }}
);
model = {{ size = "nano"; vocab_size = 300; }};
trainer = {{ consumer = "sink"; }};
stages = {{ image = {{ workers = {workers}; credits = 4; }}; tokenize = {{ workers = 1; }}; }};
{extra}
""")


def rows(path):
    with open(path, "rb") as f:
        return [l for l in f.read().split(b"\n") if l.strip(b"\r")]


def run_dir_of(out):
    for line in out.splitlines():
        if line.startswith("run directory: "):
            return line[len("run directory: "):].strip()
    fail("launch printed no run directory:\n" + out)


def check_sets(rd, train_rows, valid_rows, epochs):
    summary = json.load(open(os.path.join(rd, "summary.json")))
    rejects = [json.loads(l) for l in open(os.path.join(rd, "rejects.jsonl")) if l.strip()]
    delivered = []
    for line in open(os.path.join(rd, "delivered.tsv")):
        task, sid, epoch, split = line.rstrip("\n").split("\t")
        delivered.append((int(sid), int(epoch), split))
    # Every row the source read, as (id, epoch, split); ids are row | (valid << 39).
    read = {(r, e, "train") for r in range(train_rows) for e in range(epochs)}
    read |= {(r | (1 << 39), 0, "valid") for r in range(valid_rows)}
    rejected = set()
    for r in rejects:
        epoch = 0 if r["split"] == "valid" else None
        rejected.add((r["id"], r.get("epoch", epoch), r["split"]))
    if len(delivered) != len(set(delivered)):
        fail("a sample was delivered twice")
    got = set(delivered)
    # Rejects carry no epoch in rejects.jsonl for train rows that fail every epoch; match
    # by (id, split) and count per epoch.
    rej_keys = {(i, s) for (i, _, s) in rejected}
    want = {k for k in read if (k[0], k[2]) not in rej_keys}
    if got != want:
        fail(f"delivered set != read - rejected: {len(got - want)} unexpected, {len(want - got)} missing")
    t = summary["total"]
    if t["lost"] != 0 or t["read"] != len(read) or t["delivered"] != len(got):
        fail(f"summary disagrees: {t}, read {len(read)}, delivered {len(got)}")
    return summary, rejects


def test_rejects(tmp):
    fx = os.path.join(SRC, "tests/data/stamps_caption_small.tsv")
    plan = os.path.join(tmp, "plan.conf")
    write_plan(plan, fx, fx, 2, 4)
    p = subprocess.run([LAUNCH, "--run-dir", os.path.join(tmp, "run"), plan], capture_output=True,
                       text=True, timeout=240)
    if p.returncode != 0:
        fail(f"launch exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    rd = os.path.join(tmp, "run")
    summary, rejects = check_sets(rd, 40, 40, 2)
    by_row = {}
    for r in rejects:
        by_row.setdefault(r["row"], []).append(r)
    if sorted(by_row) != [7, 19, 31]:
        fail(f"rejected rows {sorted(by_row)}, expected [7, 19, 31]")
    # Each bad row is rejected in both epochs and in the valid split: 3 times.
    for row, want in ((7, "JPEG"), (19, "columns"), (31, "base64")):
        rs = by_row[row]
        if len(rs) != 3:
            fail(f"row {row} rejected {len(rs)} times, expected 3 (2 epochs + valid)")
        if not all(want in r["reason"] for r in rs):
            fail(f"row {row}: reason {rs[0]['reason']!r} does not mention {want}")
    if summary["total"]["rejected"] != 9:
        fail(f"summary counts {summary['total']['rejected']} rejects, expected 9")
    print(f"ok: {summary['total']['delivered']} delivered, 9 rejected with reasons:")
    for row in (7, 19, 31):
        print(f"  row {row} [{by_row[row][0]['stage']}]: {by_row[row][0]['reason']}")


def test_kill(tmp):
    data = os.path.join(SRC, "data/stamps_caption")
    train, valid = os.path.join(data, "train.tsv"), os.path.join(data, "valid.tsv")
    if not os.path.exists(train):
        fail(f"{train} missing: build it with `launch data stamps_caption`")
    ntrain, nvalid = len(rows(train)), len(rows(valid))
    epochs = 30
    plan = os.path.join(tmp, "plan.conf")
    write_plan(plan, train, valid, epochs, 4)
    rd = os.path.join(tmp, "run")
    proc = subprocess.Popen([LAUNCH, "--run-dir", rd, plan], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim, killed_pid = "image.1", None
    deadline = time.time() + 60
    # Kill the worker once it has processed a good share of items and holds some.
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            stages = json.load(open(os.path.join(rd, "stages.json")))["processes"]
            pids = json.load(open(os.path.join(rd, "pids.json")))
        except (OSError, ValueError):
            continue
        if stages.get(victim, {}).get("items_in", 0) > 300 and victim in pids:
            killed_pid = pids[victim]
            os.kill(killed_pid, signal.SIGKILL)
            break
    out, err = proc.communicate(timeout=300)
    if killed_pid is None:
        fail("the run ended before the worker could be killed:\n" + err)
    if proc.returncode != 0:
        fail(f"launch exited {proc.returncode}:\n{out}\n{err}")
    summary, _ = check_sets(rd, ntrain, nvalid, epochs)
    broker_log = open(os.path.join(rd, "logs/broker.log")).read()
    held = [l for l in broker_log.splitlines() if victim in l and "re-dispatching the" in l]
    if not held:
        fail("the broker never declared the killed worker dead")
    n_held = int(held[0].split("re-dispatching the ")[1].split(" ")[0])
    if n_held <= 0:
        fail("the killed worker held no items: the test proved nothing")
    if summary["total"]["redispatched"] <= 0:
        fail("summary shows no re-dispatch")
    if "restarting" not in err:
        fail("launch did not restart the killed worker:\n" + err)
    print(f"ok: killed {victim} (pid {killed_pid}) holding {n_held} items; "
          f"redispatched {summary['total']['redispatched']}, delivered "
          f"{summary['total']['delivered']} of {summary['total']['read']}, lost 0")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "rejects"
    with tempfile.TemporaryDirectory(prefix="ofa-e2e-") as tmp:
        {"rejects": test_rejects, "kill": test_kill}[which](tmp)
