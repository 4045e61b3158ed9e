"""mtplans.py: what scripts/multitask_experiment.sh and scripts/experts_experiment.sh share.

Cutting plans out of configs/multitask.conf (its header says how: a task block is the
lines from `  { name = "X";` to the next line that is exactly `  }` or `  },`), and
reading a finished run back (parameters of its last checkpoint, optimizer steps)."""
import json, os, re, struct, sys


def task_blocks(text, src):
    """The plan text split around its tasks list: (head, tail, names, blocks), head and
    tail the text before and after `tasks = ( ... );`, each block ending in `  }`."""
    m = re.search(r"^tasks = \(\n(.*?)^\);\n", text, re.S | re.M)
    if not m:
        sys.exit("%s: no 'tasks = (' ... ');' block" % src)
    blocks, cur = [], None
    for line in m.group(1).split("\n"):
        if re.match(r'  \{ name = "[A-Za-z0-9_-]+";', line):
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line in ("  }", "  },"):
                cur[-1] = "  }"
                blocks.append("\n".join(cur))
                cur = None
    names = [re.match(r'  \{ name = "([^"]+)"', b).group(1) for b in blocks]
    return text[:m.start()], text[m.end():], names, blocks


def pick(names, blocks, want, src):
    """The (name, block) pairs of the tasks in `want` (a space-separated list), in plan
    order; exits naming any task the plan does not have."""
    bad = [t for t in want.split() if t not in names]
    if bad:
        sys.exit("unknown task(s) %s; %s has: %s" % (", ".join(bad), src, " ".join(names)))
    return [(n, b) for n, b in zip(names, blocks) if n in want.split()]


def set_budget(block, epochs, max_rows):
    """A task block with its epochs and max_rows replaced."""
    block = re.sub(r"epochs = \d+;", "epochs = %s;" % epochs, block)
    return re.sub(r"max_rows = \d+;", "max_rows = %s;" % max_rows, block)


def params(run_dir):
    """Parameters of the run's last checkpoint: the sum over the tensors of a safetensors
    header (8-byte length, then JSON), optimizer state left out. None without one."""
    d = os.path.join(run_dir, "checkpoints")
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors")) if os.path.isdir(d) else []
    if not files:
        return None
    with open(os.path.join(d, files[-1]), "rb") as f:
        hl = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(hl))
    total = 0
    for k, v in hdr.items():
        if k == "__metadata__" or k.startswith("opt.") or k.startswith("adam"):
            continue
        c = 1
        for s in v["shape"]:
            c *= s
        total += c
    return total


def steps(run_dir):
    """Optimizer steps of a run: the largest step of its metrics.jsonl."""
    s = 0
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                s = max(s, json.loads(line).get("step", 0))
            except ValueError:
                pass
    return s
