#!/usr/bin/python3
"""metrics_ref.py: a small, independent Python reference for the corpus metrics of
metrics.c, used by tests/test_metrics.c at test time.

    /usr/bin/python3 stages/eval/metrics_ref.py CASES.json
    /usr/bin/python3 stages/eval/metrics_ref.py --map DETECTIONS.json

CASES.json is {"cases": [{"hyps": [str, ...], "refs": [[str, ...], ...]}, ...]}; the
output is one line per case: "bleu4 cider_d rouge_l" with 17 significant digits.

It follows the published definitions directly (nltk's corpus_bleu without smoothing and
coco-caption's Bleu with the "closest" reference length; coco-caption's CIDEr-D scorer;
coco-caption's ROUGE-L), written without numpy so that it runs on any python3. The text
normalisation is the one metrics.h documents: ASCII lowercase, ASCII punctuation to
spaces, split on white space.
"""

import json
import math
import string
import sys
from collections import Counter

PUNCT = set(string.punctuation)


def tokens(s):
    out = []
    for ch in s:
        if ord(ch) < 128 and (ch in PUNCT or ch.isspace() or ord(ch) < 32 or ord(ch) == 127):
            out.append(" ")
        else:
            out.append(ch.lower() if ord(ch) < 128 else ch)
    return "".join(out).split()


def ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu4(hyps, refs):
    correct = [0] * 4
    guess = [0] * 4
    c = r = 0
    for h, rs in zip(hyps, refs):
        hw = tokens(h)
        rws = [tokens(x) for x in rs]
        for n in range(1, 5):
            hc = ngrams(hw, n)
            maxref = Counter()
            for rw in rws:
                for g, k in ngrams(rw, n).items():
                    maxref[g] = max(maxref[g], k)
            correct[n - 1] += sum(min(k, maxref[g]) for g, k in hc.items())
            guess[n - 1] += max(0, len(hw) - n + 1)
        c += len(hw)
        r += min((abs(len(rw) - len(hw)), len(rw)) for rw in rws)[1]
    if any(x == 0 for x in correct) or any(x == 0 for x in guess):
        return 0.0
    logp = sum(math.log(correct[i] / guess[i]) for i in range(4)) / 4
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(logp)


def cider_d(hyps, refs, sigma=6.0):
    n_img = len(refs)
    df = Counter()
    for rs in refs:
        seen = set()
        for x in rs:
            w = tokens(x)
            for n in range(1, 5):
                seen.update(ngrams(w, n).keys())
        df.update(seen)
    log_n = math.log(float(n_img))

    def vec(s):
        w = tokens(s)
        v = [dict() for _ in range(4)]
        norm = [0.0] * 4
        for n in range(1, 5):
            for g, tf in ngrams(w, n).items():
                v[n - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
                norm[n - 1] += v[n - 1][g] ** 2
        # coco-caption counts the "length" as the number of bigrams.
        length = max(0, len(w) - 1)
        return v, [math.sqrt(x) for x in norm], length

    total = 0.0
    for h, rs in zip(hyps, refs):
        vh, nh, lh = vec(h)
        score = 0.0
        for x in rs:
            vr, nr, lr = vec(x)
            pen = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            for n in range(4):
                val = sum(min(wh, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0)
                          for g, wh in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                score += val * pen
        total += score / 4 / len(rs) * 10
    return total / len(hyps)


def lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hyps, refs, beta=1.2):
    total = 0.0
    for h, rs in zip(hyps, refs):
        hw = tokens(h)
        ps, rcs = [], []
        for x in rs:
            rw = tokens(x)
            l = lcs(rw, hw)
            ps.append(l / len(hw) if hw else 0.0)
            rcs.append(l / len(rw) if rw else 0.0)
        p, r = max(ps), max(rcs)
        if p and r:
            total += (1 + beta ** 2) * p * r / (r + beta ** 2 * p)
    return total / len(hyps)


def voc_map(hyps, refs, thresh=0.5):
    """mAP as PASCAL VOC's voc_eval.py and voc_ap(use_07_metric=False) compute it, over
    the classes of the references. hyps[i] and refs[i] are lists of [x0, y0, x1, y1,
    label] for sample i; a detection's confidence is minus its place in its list (ties:
    the earlier sample, as a stable sort by confidence gives)."""
    def iou(a, b):
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        inter = iw * ih if iw > 0 and ih > 0 else 0.0
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    classes = sorted({o[4] for r in refs for o in r})
    aps = []
    for c in classes:
        gts = {i: [o for o in r if o[4] == c] for i, r in enumerate(refs)}
        found = {i: [False] * len(g) for i, g in gts.items()}
        npos = sum(len(g) for g in gts.values())
        dets = [(-k, i, d) for i, h in enumerate(hyps) for k, d in enumerate(h) if d[4] == c]
        dets.sort(key=lambda t: -t[0])       # stable: equal ranks keep sample order
        tp, fp = [], []
        for _, i, d in dets:
            valid = d[2] > d[0] and d[3] > d[1]
            ovs = [iou(d, g) for g in gts[i]] if valid else []
            j = max(range(len(ovs)), key=lambda k: ovs[k]) if ovs else -1
            hit = j >= 0 and ovs[j] >= thresh and not found[i][j]
            if hit:
                found[i][j] = True
            tp.append(1 if hit else 0)
            fp.append(0 if hit else 1)
        if not dets:
            aps.append(0.0)
            continue
        ctp = cfp = 0
        rec, prec = [], []
        for t, f in zip(tp, fp):
            ctp += t
            cfp += f
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp))
        mrec = [0.0] + rec + [1.0]
        mpre = [0.0] + prec + [0.0]
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        aps.append(sum((mrec[k + 1] - mrec[k]) * mpre[k + 1]
                       for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k]))
    return sum(aps) / len(aps)


def main(argv):
    if len(argv) == 3 and argv[1] == "--map":
        with open(argv[2], encoding="utf-8") as f:
            for c in json.load(f)["cases"]:
                print("%.17g" % voc_map(c["hyps"], c["refs"]))
        return 0
    with open(argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    for c in cases:
        print("%.17g %.17g %.17g" % (bleu4(c["hyps"], c["refs"]),
                                     cider_d(c["hyps"], c["refs"]),
                                     rouge_l(c["hyps"], c["refs"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
