#!/usr/bin/env python3
"""Fault tests of whole runs through `launch`, with real processes and real data.

  fault_test.py kills    the built stamps_caption dataset (2560 train + 200 valid rows,
                         several epochs) into ofa-sink; a harness SIGKILLs a random image
                         worker every 1.5-2.5 s and the batcher once, early in the run.
                         The run completes; the SET of delivered (id, epoch, split) equals
                         the rows read minus the rejected ones, no sample is delivered
                         twice, lost 0; the batcher was restarted and sent again what it
                         had not confirmed; and the batch digests equal those of the same
                         plan run without any kill (batches are cut the same way).
  fault_test.py resume   a CPU training run (nano model, 2 image workers, log_every 1) is
                         run once uninterrupted; a second run of the same plan has its
                         batcher SIGKILLed early (restarted by launch), writes a
                         checkpoint, then one image worker is stopped (SIGSTOP) until the
                         broker declares it dead and re-dispatches what it held, then
                         killed; a few steps later every process of the run is SIGKILLed;
                         `launch --resume` finishes it. Every metrics.jsonl line (step,
                         task, loss, lr) after the resume equals the uninterrupted run's,
                         the loss bit for bit (printed with 9 digits, exact for float32),
                         and so does every line written before the kill.

Needs only the Python standard library. Paths come from OFA_SOURCE_DIR / OFA_BINARY_DIR
(set by CTest) or default to the checkout and build/. KEEP=1 keeps the temporary folder.
"""
import json, os, random, shutil, signal, subprocess, sys, tempfile, time

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")
LAUNCH = os.path.join(BIN, "launch")
DATA = os.path.join(SRC, "data/stamps_caption")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def rows(path):
    with open(path, "rb") as f:
        return [l for l in f.read().split(b"\n") if l.strip(b"\r")]


def need_data():
    train, valid = os.path.join(DATA, "train.tsv"), os.path.join(DATA, "valid.tsv")
    if not os.path.exists(train) or not os.path.exists(valid):
        fail(f"{train} missing: build it with `launch data stamps_caption` "
             "(scripts/build_data.py stamps_caption)")
    return train, valid


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_launch(proc, timeout, what):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        fail(f"{what}: launch did not finish in {timeout} s:\n{err[-3000:]}")
    if proc.returncode != 0:
        fail(f"{what}: launch exited {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}")
    return out, err


# ---------------------------------------------------------------- kills

def kills_plan(path, train, valid, epochs, digest):
    with open(path, "w") as f:
        f.write(f"""
name = "faults";
seed = 7;
tasks = (
  {{ name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"]; valid = ["{valid}"];
    columns = ["id", "img", "cap"]; batch_size = 16; epochs = {epochs}; }}
);
model = {{ size = "nano"; vocab_size = 300; }};
trainer = {{ consumer = "sink"; }};
stages = {{
  image = {{ workers = 3; credits = 4; }};
  tokenize = {{ workers = 1; }};
  sink = {{ program = ["ofa-sink", "--digest", "{digest}"]; }};
}};
""")


def test_kills(tmp):
    train, valid = need_data()
    ntrain, nvalid = len(rows(train)), len(rows(valid))
    epochs = 20
    total = ntrain * epochs + nvalid
    plan = os.path.join(tmp, "kills.conf")
    kills_plan(plan, train, valid, epochs, os.path.join(tmp, "kills.digest"))
    rd = os.path.join(tmp, "run-kills")
    t0 = time.time()
    proc = subprocess.Popen([LAUNCH, "--run-dir", rd, plan], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    rng = random.Random(1234)
    killed, batcher_killed_at = [], None
    per_worker = {}
    next_kill = time.time() + 1.5
    while proc.poll() is None:
        time.sleep(0.05)
        pids, stages = load_json(os.path.join(rd, "pids.json")), load_json(os.path.join(rd, "stages.json"))
        if not pids or not stages:
            continue
        done = stages.get("processes", {}).get("sink", {}).get("samples", 0)
        # The batcher once, between a tenth and a third of the run (it then holds batches
        # and a reorder buffer; what its consumers had not confirmed must come back).
        if batcher_killed_at is None and total * 0.1 < done < total * 0.33 and "batcher" in pids:
            os.kill(pids["batcher"], signal.SIGKILL)
            batcher_killed_at = done
            print(f"killed the batcher (pid {pids['batcher']}) at {done} of {total} samples")
        # A random image worker every 1.5-2.5 s; at most 3 kills each (launch gives up on a
        # worker that crashes 5 times in 30 s, which is not what this test is about).
        if time.time() >= next_kill and done < total * 0.9:
            cands = [n for n in pids if n.startswith("image.") and per_worker.get(n, 0) < 3]
            if cands:
                victim = rng.choice(sorted(cands))
                try:
                    os.kill(pids[victim], signal.SIGKILL)
                    killed.append(victim)
                    per_worker[victim] = per_worker.get(victim, 0) + 1
                except ProcessLookupError:
                    pass
            next_kill = time.time() + rng.uniform(1.5, 2.5)
    out, err = wait_launch(proc, 1, "run with kills")
    elapsed = time.time() - t0
    if batcher_killed_at is None:
        fail("the run ended before the batcher could be killed:\n" + err[-3000:])
    if len(killed) < 3:
        fail(f"only {len(killed)} worker kills happened in {elapsed:.0f} s: the test proved too little")

    # Every valid row x epoch delivered exactly once, compared as sets.
    summary = load_json(os.path.join(rd, "summary.json"))
    rejects = [json.loads(l) for l in open(os.path.join(rd, "rejects.jsonl")) if l.strip()]
    delivered = []
    for line in open(os.path.join(rd, "delivered.tsv")):
        task, sid, epoch, split = line.rstrip("\n").split("\t")
        delivered.append((int(sid), int(epoch), split))
    if len(delivered) != len(set(delivered)):
        fail(f"{len(delivered) - len(set(delivered))} samples delivered twice")
    read = {(r, e, "train") for r in range(ntrain) for e in range(epochs)}
    read |= {(r | (1 << 39), 0, "valid") for r in range(nvalid)}
    rejected = {(r["id"], r["split"]) for r in rejects}
    want = {k for k in read if (k[0], k[2]) not in rejected}
    got = set(delivered)
    if got != want:
        fail(f"delivered set != valid rows x epochs: {len(got - want)} unexpected, "
             f"{len(want - got)} missing")
    t = summary["total"]
    if t["lost"] != 0 or t["read"] != len(read) or t["delivered"] != len(want):
        fail(f"summary disagrees: {t}; read {len(read)}, valid {len(want)}")
    if t["redispatched"] <= 0:
        fail(f"nothing was re-dispatched: {t}")
    # The batcher was restarted and got again what it had not confirmed.
    if "launch: batcher killed by signal 9" not in err or "restarting" not in err:
        fail("launch did not restart the batcher:\n" + err[-3000:])
    blog = open(os.path.join(rd, "logs/broker.log")).read()
    rejoin = [l for l in blog.splitlines() if "(re)joined: it starts at seq" in l]
    if not rejoin:
        fail("the broker never saw the batcher come back")
    resent = int(rejoin[0].split("; ")[1].split(" ")[0])
    print(f"ok: {len(killed)} worker kills ({', '.join(killed)}), batcher killed at "
          f"{batcher_killed_at} samples; broker: {rejoin[0].split('broker: ')[-1]}")
    print(f"    {len(want)} distinct samples delivered = {ntrain} train rows x {epochs} epochs "
          f"+ {nvalid} valid - {len(read) - len(want)} rejected; lost 0; "
          f"redispatched {t['redispatched']} (of which {resent} to the restarted batcher), "
          f"duplicates dropped {t['duplicates_dropped']}; {elapsed:.0f} s")

    # The same plan without kills: the batches are the same, byte for byte.
    plan2 = os.path.join(tmp, "calm.conf")
    kills_plan(plan2, train, valid, epochs, os.path.join(tmp, "calm.digest"))
    p2 = subprocess.Popen([LAUNCH, "--run-dir", os.path.join(tmp, "run-calm"), plan2],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_launch(p2, 240, "run without kills")
    a = open(os.path.join(tmp, "kills.digest")).read()
    b = open(os.path.join(tmp, "calm.digest")).read()
    if a != b:
        la, lb = a.splitlines(), b.splitlines()
        first = next((i for i in range(min(len(la), len(lb))) if la[i] != lb[i]), min(len(la), len(lb)))
        fail(f"batches differ from the run without kills ({len(la)} vs {len(lb)} batches; "
             f"first difference at batch {first})")
    print(f"ok: {len(a.splitlines())} batches identical to the run without kills")


# ---------------------------------------------------------------- resume

def resume_plan(path, train, valid):
    with open(path, "w") as f:
        f.write(f"""
name = "resume";
seed = 9;
tasks = (
  {{ name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{train}"]; valid = ["{valid}"];
    columns = ["id", "img", "cap"]; batch_size = 16; epochs = 1; }}
);
model = {{ size = "nano"; vocab_size = 300; }};
trainer = {{ backend = "cpu"; threads = 1; lr = 0.002; warmup = 10; log_every = 1;
            checkpoint_every = 40; keep_checkpoints = 5; max_gen_len = 8; }};
stages = {{
  image = {{ workers = 2; credits = 4; }};
  tokenize = {{ workers = 1; }};
  # Behind a slow trainer, samples cross the tiers in bursts a few seconds apart (the
  # batcher pulls a window, then waits for the trainer): a worker is declared dead
  # after 8 s of silence here, so a stopped one is sure to be holding some by then.
  broker = {{ program = ["ofa-broker", "--dead-ms", "8000"]; }};
}};
""")


def metrics(rd):
    """metrics.jsonl as a list of (step, task, loss text, lr text), in file order."""
    out = []
    path = os.path.join(rd, "metrics.jsonl")
    if not os.path.exists(path):
        return out
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        # The loss as written (9 significant digits): compared as text, so bit for bit.
        loss_txt = line.split('"loss":', 1)[1].split(",", 1)[0]
        lr_txt = line.split('"lr":', 1)[1].split(",", 1)[0]
        d = json.loads(line)
        out.append((d["step"], d["task"], loss_txt, lr_txt))
    return out


def checkpoints(rd):
    d = os.path.join(rd, "checkpoints")
    return sorted(int(f[5:13]) for f in os.listdir(d) if f.startswith("ckpt-") and f.endswith(".state"))


def test_resume(tmp):
    train, valid = need_data()
    plan = os.path.join(tmp, "resume.conf")
    resume_plan(plan, train, valid)
    ref = os.path.join(tmp, "run-ref")
    t0 = time.time()
    p = subprocess.Popen([LAUNCH, "--run-dir", ref, plan], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_launch(p, 400, "uninterrupted run")
    want = metrics(ref)
    print(f"uninterrupted run: {len(want)} steps in {time.time() - t0:.0f} s")

    rd = os.path.join(tmp, "run-cut")
    p = subprocess.Popen([LAUNCH, "--run-dir", rd, plan], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    state, victim, stopped_at, ckpt, redispatch_line = "ckpt", "image.1", None, None, None
    steps_then = 0
    while True:
        if p.poll() is not None or time.time() > deadline:
            out, err = p.communicate()
            fail(f"the run ended (or timed out) in state '{state}' before it could be cut:\n{err[-3000:]}")
        time.sleep(0.05)
        pids = load_json(os.path.join(rd, "pids.json"))
        if not pids or victim not in pids:
            continue
        if state == "ckpt" and "batcher" in pids and len(metrics(rd)) >= 10:
            # The batcher once, early: launch restarts it, it cuts the same batches
            # again, and the trainer drops the ones it had already taken.
            os.kill(pids["batcher"], signal.SIGKILL)
            state = "batcher"
            print(f"batcher SIGKILLed at step {len(metrics(rd))}")
        elif state == "batcher" and os.path.isdir(os.path.join(rd, "checkpoints")) and checkpoints(rd):
            ckpt = checkpoints(rd)[-1]
            # Stop the worker: the broker keeps sending it samples until it is declared
            # dead, then re-dispatches all it held; then it is killed (launch restarts it).
            os.kill(pids[victim], signal.SIGSTOP)
            stopped_at, state = time.time(), "stopped"
            print(f"checkpoint at step {ckpt}; {victim} stopped (SIGSTOP)")
        elif state == "stopped":
            blog = open(os.path.join(rd, "logs/broker.log")).read()
            lines = [l for l in blog.splitlines() if l.startswith(f"broker: worker {victim} silent")]
            if lines:
                n = int(lines[-1].split("re-dispatching the ")[1].split(" ")[0])
                if n <= 0:
                    fail(f"{victim} held nothing when declared dead: no re-dispatch to test")
                redispatch_line = lines[-1]
                os.kill(pids[victim], signal.SIGKILL)
                steps_then = len(metrics(rd))
                state = "redispatched"
                print(f"{redispatch_line.split('broker: ')[1]}; killed it at step {steps_then}")
        elif state == "redispatched" and len(metrics(rd)) >= steps_then + 3:
            # SIGKILL every process of the run at once: launch and each child (each has
            # its own process group; they would die with launch anyway, PDEATHSIG).
            victims = [p.pid] + [v for k, v in pids.items()]
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.communicate()
            cut_steps = len(metrics(rd))
            # The checkpoint the resume starts from: written at or before the step at
            # which the re-dispatch was seen (the trainer waits for the re-dispatched
            # samples there), so they are trained again after the resume.
            ckpt = checkpoints(rd)[-1]
            if ckpt > steps_then:
                fail(f"a checkpoint ({ckpt}) was written after the re-dispatch (step {steps_then}); "
                     "the run was cut too late to test a re-dispatch between checkpoint and kill")
            print(f"SIGKILLed {len(victims)} processes at step {cut_steps} (checkpoint {ckpt})")
            break
    time.sleep(0.5)
    p = subprocess.Popen([LAUNCH, "--resume", "--run-dir", rd, plan], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_launch(p, 400, "resumed run")
    got = metrics(rd)
    tlog = open(os.path.join(rd, "logs/trainer.0.log")).read()
    blog = open(os.path.join(rd, "logs/broker.log")).read()
    if "(re)joined: it starts at seq" not in blog:
        fail("the broker never saw the restarted batcher")
    again = tlog.count("delivered again")
    if again < 1:
        fail("the trainer got no batch twice after the batcher restart: the test proved too little")
    if f"resumed from step {ckpt}" not in tlog:
        fail(f"the trainer did not resume from step {ckpt}:\n{tlog[-2000:]}")
    # Lines after the resume: the last occurrence of each step (steps between the
    # checkpoint and the cut were logged twice, before the kill and after the resume).
    last = {}
    for i, m in enumerate(got):
        last[m[0]] = (i, m)
    ref = {m[0]: m for m in want}
    if sorted(last) != sorted(ref):
        fail(f"steps after resume {min(last)}..{max(last)} ({len(last)}), "
             f"uninterrupted {min(ref)}..{max(ref)} ({len(ref)})")
    bad = [(s, last[s][1], ref[s]) for s in sorted(ref) if last[s][1] != ref[s]]
    if bad:
        s, a, b = bad[0]
        fail(f"{len(bad)} steps differ from the uninterrupted run; first: step {s}: "
             f"{a} vs {b}")
    # The lines written before the kill (steps up to the cut, those after the checkpoint
    # trained again after the resume) equal the uninterrupted run's too.
    early = [m for m in got if m != ref.get(m[0])]
    if early:
        fail(f"{len(early)} metrics lines differ from the uninterrupted run; first: {early[0]} "
             f"vs {ref.get(early[0][0])}")
    twice = [m for m in got if m[0] > ckpt and m[0] <= cut_steps]
    after = [m for i, m in enumerate(got) if m[0] > ckpt and last[m[0]][0] == i]
    print(f"ok: {len(after)} steps after the resume from checkpoint {ckpt} equal the "
          f"uninterrupted run's bit for bit (loss and lr); the {len(twice) // 2} steps "
          f"between the checkpoint and the kill were trained twice, identically; the trainer "
          f"dropped {again} batches sent again by the restarted batcher")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "kills"
    tmp = tempfile.mkdtemp(prefix="ofa-faults-")
    try:
        {"kills": test_kills, "resume": test_resume}[which](tmp)
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept " + tmp)
