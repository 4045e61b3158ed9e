#!/usr/bin/env python3
"""End-to-end: a run through `launch` on tcp:// with CURVE (plan key transport = "tcp").

The fixture of pipeline_test.py's rejects test (40 rows, 3 bad) runs with its endpoints
on 127.0.0.1 and every socket secured by the run's CURVE keys. Checks: the run completes
with every good row delivered exactly once and lost == 0 (the same books as the ipc://
run); RUN/curve.keys exists with mode 0600; every process got `--curve RUN/curve.keys`
and no key text appears on any command line (graph.dot lists the argv lists); the broker
and the batcher say they bound with CURVE; and while the run is up, a plain ZeroMQ client
that connects to the broker's port and sends a hello is never seen by the broker.
"""
import json, os, re, stat, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_test as pt  # noqa: E402


def main(tmp):
    fx = os.path.join(pt.SRC, "tests/data/stamps_caption_small.tsv")
    plan = os.path.join(tmp, "plan.conf")
    pt.write_plan(plan, fx, fx, 2, 2, extra='transport = "tcp";')
    rd = os.path.join(tmp, "run")
    proc = subprocess.Popen([pt.LAUNCH, "--run-dir", rd, plan], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # While the run is up: every process's command line (from /proc) names the key file
    # and holds no key; a stranger, a plain socket, connects to the broker's port.
    import zmq
    stranger, cmdlines = None, {}
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and stranger is None:
        time.sleep(0.05)
        try:
            pids = json.load(open(os.path.join(rd, "pids.json")))
        except (OSError, ValueError):
            continue
        for name, pid in pids.items():
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except (OSError, TypeError):
                continue
            # Between fork and exec a child still shows launch's own command line; a
            # process that has exited shows an empty one.
            if argv and argv[0] and argv[0].decode() != pt.LAUNCH:
                cmdlines[name] = argv
        argv = [a.decode() for a in cmdlines.get("broker", [])]
        if "--bind" not in argv or len(cmdlines) < max(5, len(pids)):
            continue
        ctx = zmq.Context()
        stranger = ctx.socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.setsockopt(zmq.IDENTITY, b"stranger")
        stranger.connect(argv[argv.index("--bind") + 1])
        hello = b"\x81\xa1k\xa5hello"   # not even a valid envelope: it must not arrive at all
        for _ in range(20):
            try:
                stranger.send(hello, zmq.NOBLOCK)
            except zmq.Again:
                pass
            time.sleep(0.05)
    out, err = proc.communicate(timeout=240)
    if stranger is not None:
        stranger.close()
    if proc.returncode != 0:
        pt.fail(f"launch exited {proc.returncode}:\n{out}\n{err}")
    summary, rejects = pt.check_sets(rd, 40, 40, 2)
    if summary["total"]["rejected"] != 9:
        pt.fail(f"summary counts {summary['total']['rejected']} rejects, expected 9")

    keys = os.path.join(rd, "curve.keys")
    mode = stat.S_IMODE(os.stat(keys).st_mode)
    if mode != 0o600:
        pt.fail(f"{keys} has mode {mode:o}, not 600")
    # "name = KEY": split at the first '=' only, since '=' is a letter of Z85.
    secrets = [l.split("=", 1)[1].strip() for l in open(keys) if "=" in l]
    if len(secrets) != 4:
        pt.fail(f"{keys} holds {len(secrets)} keys, not 4")
    if stranger is None:
        pt.fail("the run ended before its processes could be looked at")
    for name, argv in cmdlines.items():
        text = b" ".join(argv).decode()
        if any(k in text for k in secrets):
            pt.fail(f"a CURVE key is on the command line of {name}")
        if "--curve " + keys not in text:
            pt.fail(f"{name} did not get --curve {keys}: {text}")
        if "tcp://127.0.0.1:" not in text:
            pt.fail(f"{name} has no tcp:// endpoint: {text}")
    procs = list(cmdlines)
    logs = os.path.join(rd, "logs")
    for name in ("broker",):
        text = open(os.path.join(logs, name + ".log")).read()
        if "CURVE" not in text:
            pt.fail(f"{name}.log does not say it bound with CURVE:\n{text}")
    blog = open(os.path.join(logs, "broker.log")).read()
    if "stranger" in blog or "malformed" in blog:
        pt.fail("the broker saw the plain client's messages:\n" + blog)
    print(f"ok: tcp:// + CURVE run of {len(procs)} processes delivered "
          f"{summary['total']['delivered']}, rejected 9, lost 0; key file 0600, no key on a "
          f"command line; a plain client was refused")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="ofa-sec-") as tmp:
        main(tmp)
