#!/usr/bin/env python3
"""Tests of launch's profiling verbs (docs/profiling.md) on real runs.

  test_report.py profile   `launch profile` of a sink plan: trace.json is Chrome
                           trace-event JSON with spans of the source, an image worker,
                           the batcher and the sink; stats.jsonl is bounded (one line per
                           process per second); `launch top --once` names every stage and
                           a bottleneck.
  test_report.py top       `launch top --once` on a made-up run directory: the rates,
                           fractions and bottleneck equal the ones computed by hand;
                           malformed lines are named and skipped; a folder that is no run
                           is refused with a reason.
  test_report.py report    a short training run, then `launch report`: report.html is
                           rendered by headless Chromium; it has one loss point per line
                           of metrics.jsonl, a model and a baseline bar per task, and
                           throughput/busy points per stage; a screenshot is kept.

Paths come from OFA_SOURCE_DIR / OFA_BINARY_DIR (set by CTest).
"""
import json, os, re, shutil, signal, subprocess, sys, tempfile, time
from html.parser import HTMLParser

SRC = os.environ.get("OFA_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
BIN = os.path.join(os.environ.get("OFA_BINARY_DIR", os.path.join(SRC, "build")), "bin")
LAUNCH = os.path.join(BIN, "launch")
FIXTURE = os.path.join(SRC, "tests/data/stamps_caption_small.tsv")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def write_plan(path, consumer, epochs, workers=2):
    with open(path, "w") as f:
        f.write(f"""
name = "prof";
seed = 5;
tasks = (
  {{
    name = "caption";
    instruction = "[IMAGE:img] what does the image describe? -> [TEXT:cap]";
    train = ["{FIXTURE}"];
    valid = ["{FIXTURE}"];
    columns = ["id", "img", "cap"];
    batch_size = 8;
    epochs = {epochs};
  }}
);
model = {{ size = "nano"; vocab_size = 300; }};
trainer = {{ consumer = "{consumer}"; lr = 2e-3; warmup = 5; }};
stages = {{ image = {{ workers = {workers}; credits = 4; }}; tokenize = {{ workers = 1; }}; }};
""")


def run(args, timeout=300, ok=True):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if ok and p.returncode != 0:
        fail(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def check_timeline(rd):
    lines = [json.loads(l) for l in open(os.path.join(rd, "stats.jsonl"))]
    if not lines:
        fail("stats.jsonl is empty")
    by_proc = {}
    for l in lines:
        for k in ("t", "proc", "tier", "pid"):
            if k not in l:
                fail(f"stats.jsonl line without {k}: {l}")
        by_proc.setdefault(l["proc"], []).append(l["t"])
    # Bounded: launch writes at most one line per process per second, plus the final
    # snapshots when the run ends.
    for proc, ts in by_proc.items():
        for a, b in zip(ts, ts[1:-1]):
            if b - a < 0.9:
                fail(f"{proc}: two timeline lines {b - a:.3f} s apart")
    return by_proc


def test_profile(tmp):
    plan = os.path.join(tmp, "plan.conf")
    write_plan(plan, "sink", 300)
    rd = os.path.join(tmp, "run")
    prof = subprocess.Popen([LAUNCH, "profile", "--seconds", "60", "--run-dir", rd, plan],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Live: top follows stats.jsonl while the run goes, redraws, and stops on SIGINT.
    deadline = time.time() + 60
    while time.time() < deadline and prof.poll() is None and not (
            os.path.exists(os.path.join(rd, "stats.jsonl")) and
            os.path.getsize(os.path.join(rd, "stats.jsonl")) > 0):
        time.sleep(0.1)
    live = subprocess.Popen([LAUNCH, "top", "--interval", "0.5", rd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    live.send_signal(signal.SIGINT)
    lout, lerr = live.communicate(timeout=10)
    if live.returncode != 0 or lout.count("\033[H\033[2J") < 2 or "PROCESS" not in lout:
        fail(f"live top: exit {live.returncode}, {lout.count(chr(27) + '[H')} redraws:\n{lout[-800:]}{lerr}")
    print(f"ok: live top redrew {lout.count(chr(27) + '[H')} times while the run went")
    out, err = prof.communicate(timeout=240)
    if prof.returncode != 0:
        fail(f"launch profile exited {prof.returncode}:\n{out}\n{err}")
    trace = json.load(open(os.path.join(rd, "trace.json")))
    events = trace["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    spans = {}
    for e in events:
        if e["ph"] != "X":
            continue
        if not (isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and e["pid"] in names):
            fail(f"bad span {e}")
        spans.setdefault(names[e["pid"]], set()).add(e["name"])
    want = {"source": {"read", "send"}, "image.0": {"recv", "work", "send"},
            "batcher": {"recv", "batch", "send"}, "sink": {"consume"}, "broker": {"route"}}
    for proc, kinds in want.items():
        if not kinds <= spans.get(proc, set()):
            fail(f"{proc}: spans {sorted(spans.get(proc, []))}, expected at least {sorted(kinds)}")
    print(f"ok: trace.json: {sum(1 for e in events if e['ph'] == 'X')} spans; " +
          ", ".join(f"{k}: {'/'.join(sorted(v))}" for k, v in sorted(spans.items())))
    by_proc = check_timeline(rd)
    print(f"ok: stats.jsonl: {sum(map(len, by_proc.values()))} lines of {len(by_proc)} processes, "
          "at most one per process per second")
    t = run([LAUNCH, "top", "--once", rd]).stdout
    print(t)
    for stage in ("source", "broker", "image", "tokenize", "batcher", "sink"):
        if not re.search(rf"^{stage}\b", t, re.M):
            fail(f"top names no {stage} process")
    m = re.search(r"^bottleneck: (\S+) ", t, re.M)
    if not m or m.group(1) not in ("source", "broker", "image", "tokenize", "batcher", "sink"):
        fail("top names no bottleneck stage")
    # The items of the sink equal the batches it received (stages.json, written at exit).
    final = json.load(open(os.path.join(rd, "stages.json")))["processes"]
    row = re.search(r"^sink\s+sink\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\d+)$", t, re.M)
    if not row or int(row.group(1)) != final["sink"]["items_in"]:
        fail(f"top's sink items {row and row.group(1)} != stages.json {final['sink']['items_in']}")
    print(f"ok: top names every stage; bottleneck {m.group(1)}")


def test_top(tmp):
    rd = os.path.join(tmp, "fake")
    os.makedirs(rd)
    with open(os.path.join(rd, "stats.jsonl"), "w") as f:
        # image.0: 300 items over 2 s with 1.8 s busy (150/s, 90%); image.1 the same
        # rate at 70%; sink: 40 batches in 2 s, 10% busy, 90% waiting.
        for t, k in ((1.0, 0), (2.0, 1), (3.0, 2)):
            f.write(json.dumps({"t": t, "proc": "image.0", "tier": "image", "pid": 10,
                                "time": 100.0 + t, "items_in": 150 * k, "items_out": 150 * k,
                                "busy_s": 0.9 * k, "wait_s": 0.1 * k, "cpu_s": 0.95 * k,
                                "lat_p50_ms": 6.0, "lat_p90_ms": 7.0, "lat_p99_ms": 9.5}) + "\n")
            f.write(json.dumps({"t": t, "proc": "image.1", "tier": "image", "pid": 11,
                                "time": 100.0 + t, "items_out": 150 * k, "busy_s": 0.7 * k,
                                "wait_s": 0.3 * k}) + "\n")
            f.write(json.dumps({"t": t, "proc": "sink", "tier": "sink", "pid": 12,
                                "time": 100.0 + t, "items_in": 20 * k, "busy_s": 0.1 * k,
                                "wait_s": 0.9 * k, "queue_depth": 3}) + "\n")
            if t == 2.0:
                f.write('{"t": 2.5, "proc": "image.0", "items_in": \n')   # truncated
    p = run([LAUNCH, "top", "--once", rd])
    t = p.stdout
    print(t)
    # The process table's rows have 11 columns (the tier table's have 5). CPU% is cpu_s per
    # second: 95% for image.0; "-" for processes that do not report it.
    rows = {l.split()[0]: l.split() for l in t.splitlines() if len(l.split()) == 11}
    want = {"image.0": ["150.0", "90.0", "10.0", "95.0"], "image.1": ["150.0", "70.0", "30.0", "-"],
            "sink": ["20.0", "10.0", "90.0", "-", "3"]}
    for proc, cols in want.items():
        if rows.get(proc, [])[2:2 + len(cols)] != cols:
            fail(f"{proc}: {rows.get(proc)} want {cols}")
    if "bottleneck: image (busy 80% per process, 2 processes)" not in t:
        fail("the bottleneck is the image tier at 80% per process")
    if "stats.jsonl:7:" not in p.stderr:
        fail(f"the truncated line 7 is not named: {p.stderr!r}")
    # --window 1: only the last second (the same rates here, by construction).
    t1 = run([LAUNCH, "top", "--once", "--window", "1", rd]).stdout
    if "bottleneck: image" not in t1:
        fail("--window 1 changed the bottleneck")
    empty = os.path.join(tmp, "empty")
    os.makedirs(empty)
    p = run([LAUNCH, "top", "--once", empty], ok=False)
    if p.returncode == 0 or "stats.jsonl" not in p.stderr:
        fail(f"top on an empty folder: exit {p.returncode}, {p.stderr!r}")
    p = run([LAUNCH, "top", "--once", "--window", "abc", rd], ok=False)
    if p.returncode != 2 or "--window" not in p.stderr:
        fail("a bad --window is not refused")
    print("ok: top's figures and bottleneck match the hand-computed ones; bad input refused")
    test_suggest(tmp)


def test_suggest(tmp):
    """The worker-count suggestion, computed by hand: two image workers at 100 items/s
    each, 25% busy (400 items per busy second each, 200/s in all); the trainer is 25%
    busy, so it could take 200 / 0.25 = 800/s: 1.1 * 800 / 400 = 2.2 -> 3 workers.
    The tokenizer: 200/s at 10% busy (2000 per busy second) -> ceil(1.1 * 800 / 2000) = 1."""
    rd = os.path.join(tmp, "suggest")
    os.makedirs(rd)
    with open(os.path.join(rd, "stats.jsonl"), "w") as f:
        for t, k in ((1.0, 0), (2.0, 1), (3.0, 2)):
            for i in range(2):
                f.write(json.dumps({"t": t, "proc": f"image.{i}", "tier": "image", "pid": 20 + i,
                                    "time": 100.0 + t, "items_in": 100 * k,
                                    "items_out": 100 * k, "busy_s": 0.25 * k,
                                    "wait_s": 0.75 * k}) + "\n")
            f.write(json.dumps({"t": t, "proc": "tokenize.0", "tier": "tokenize", "pid": 30,
                                "time": 100.0 + t, "items_in": 200 * k, "items_out": 200 * k,
                                "busy_s": 0.1 * k, "wait_s": 0.9 * k}) + "\n")
            f.write(json.dumps({"t": t, "proc": "trainer.0", "tier": "trainer", "pid": 40,
                                "time": 100.0 + t, "items_in": 12.5 * k, "busy_s": 0.25 * k,
                                "wait_s": 0.75 * k}) + "\n")
    t = run([LAUNCH, "top", "--once", rd]).stdout
    print(t)
    for want in ("could take 4.0x today's rate", "stages.image.workers = 3;   # now 2",
                 "stages.tokenize.workers = 1;   # now 1"):
        if want not in t:
            fail(f"suggestion: '{want}' missing")
    print("ok: the suggested worker counts match the hand-computed ones")


class Points(HTMLParser):
    def __init__(self):
        super().__init__()
        self.pts, self.bars, self.svgs = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "circle" and "pt" in cls:
            self.pts.append((cls, a))
        if tag == "rect" and "bar" in cls:
            self.bars.append(a)
        if tag == "svg":
            self.svgs.append(a.get("id"))


def render(html):
    """The DOM after headless Chromium rendered the page (or the file itself)."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chrome:
        print("SKIP chromium: not installed; checking the HTML as written")
        return open(html).read(), None
    url = "file://" + os.path.abspath(html)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run([chrome] + flags + ["--dump-dom", url], capture_output=True,
                         text=True, timeout=120)
    if dom.returncode != 0 or "<svg" not in dom.stdout:
        fail(f"chromium --dump-dom failed: {dom.returncode} {dom.stderr[-500:]}")
    png = os.path.join(os.path.dirname(html), "report.png")
    subprocess.run([chrome] + flags + ["--window-size=1000,1800", f"--screenshot={png}", url],
                   capture_output=True, timeout=120)
    if not os.path.exists(png) or os.path.getsize(png) < 10000:
        fail("chromium wrote no screenshot")
    return dom.stdout, png


def test_report(tmp):
    plan = os.path.join(tmp, "plan.conf")
    write_plan(plan, "trainer", 40)
    rd = os.path.join(tmp, "run")
    run([LAUNCH, "--run-dir", rd, plan], timeout=600)
    run([LAUNCH, "report", rd])
    html = os.path.join(rd, "report.html")
    text = open(html).read()
    if re.search(r"<script|https?://(?!www\.w3\.org/2000/svg)", text):
        fail("report.html loads something from outside or runs a script")
    dom, png = render(html)
    pp = Points()
    pp.feed(dom)
    metrics = [json.loads(l) for l in open(os.path.join(rd, "metrics.jsonl")) if l.strip()]
    loss = [a for c, a in pp.pts if "loss" in c]
    if len(loss) != len(metrics) or not metrics:
        fail(f"{len(loss)} loss points for {len(metrics)} lines of metrics.jsonl")
    got = sorted((a["data-task"], int(a["data-step"])) for a in loss)
    if got != sorted((m["task"], m["step"]) for m in metrics):
        fail("the loss points are not the (task, step) pairs of metrics.jsonl")
    ev = json.load(open(os.path.join(rd, "eval.json")))
    bars = {(b["data-task"], b["data-kind"]): float(b["data-value"]) for b in pp.bars}
    for task, e in ev.items():
        if abs(bars.get((task, "model"), -1) - e["value"]) > 1e-4 * max(1, abs(e["value"])) or \
           abs(bars.get((task, "baseline"), -1) - e["baseline"]) > 1e-4 * max(1, abs(e["baseline"])):
            fail(f"eval bars of {task}: {bars}, eval.json {e}")
    tput = {a["data-tier"] for c, a in pp.pts if "tput" in c}
    busy = {a["data-tier"] for c, a in pp.pts if "busy" in c}
    for stage in ("source", "image", "batcher", "trainer"):
        if stage not in tput or stage not in busy:
            fail(f"no throughput/busy points of {stage}: {sorted(tput)} / {sorted(busy)}")
    for svg in ("loss", "eval", "throughput", "busy"):
        if svg not in pp.svgs:
            fail(f"no {svg} chart")
    stages = re.search(r'<pre id="stages">(.*?)</pre>', dom, re.S)
    if not stages or not re.search(r"^bottleneck: trainer ", stages.group(1), re.M):
        fail("the stages table of report.html names no bottleneck (the trainer, busy all along)")
    keep = os.environ.get("OFA_REPORT_KEEP")
    if keep and png:
        shutil.copy(png, keep)
    print(f"ok: report.html rendered{' by chromium' if png else ''}: {len(loss)} loss points "
          f"= {len(metrics)} lines of metrics.jsonl, {len(pp.bars)} eval bars, stages {sorted(tput)}")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    tests = {"profile": test_profile, "top": test_top, "report": test_report}
    if which not in tests:
        fail(f"usage: test_report.py {'|'.join(tests)}")
    with tempfile.TemporaryDirectory(prefix="ofa-prof-") as tmp:
        tests[which](tmp)
