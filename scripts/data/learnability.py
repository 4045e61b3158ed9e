#!/usr/bin/python3
"""learnability.py: can a nano model learn stamps_caption in minutes on a CPU?

    /usr/bin/python3 scripts/data/learnability.py [--data data/stamps_caption]
                                                  [--seconds 25] [--threads 1]

A reference measurement for the dataset, independent of the C pipeline: a PyTorch
encoder-decoder of the `nano` shape (d=64, 2+2 layers, 4 heads, ffn 256, 16 px patches
of the 96 px image, learned positions, pre-LayerNorm, GELU; word-level targets) trains
for a fixed wall time on the training split, captions the validation split greedily,
and prints CIDEr-D and BLEU-4 (stages/eval/metrics_ref.py, the same definitions as the
C library) beside the best constant caption's. It needs python3-torch. Not a test: the
numbers depend on the machine's speed, and docs/data.md quotes one run.
"""

import argparse
import base64
import io
import os
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "stages", "eval"))
import metrics_ref  # noqa: E402

MAX_T = 12   # <s> + the longest caption (7 words) + </s>, with room


def load(path):
    """Images as (N, 36, 768) patch rows scaled to [-1, 1], and the captions."""
    imgs, caps = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = line.rstrip("\n").split("\t")
            im = Image.open(io.BytesIO(base64.urlsafe_b64decode(r[1]))).convert("RGB")
            imgs.append(np.asarray(im))
            caps.append(r[2])
    x = torch.tensor(np.stack(imgs)).float() / 255 * 2 - 1
    return x.reshape(-1, 6, 16, 6, 16, 3).permute(0, 1, 3, 2, 4, 5).reshape(-1, 36, 768), caps


class Nano(nn.Module):
    def __init__(self, nvocab, d=64):
        super().__init__()
        self.patch = nn.Linear(768, d)
        self.src_pos = nn.Parameter(torch.randn(36, d) * 0.02)
        self.tok = nn.Embedding(nvocab, d)
        self.tgt_pos = nn.Parameter(torch.randn(MAX_T, d) * 0.02)
        self.tr = nn.Transformer(d, 4, 2, 2, 256, 0.0, batch_first=True, norm_first=True,
                                 activation="gelu")
        self.out = nn.Linear(d, nvocab)

    def forward(self, x, y):
        mask = self.tr.generate_square_subsequent_mask(y.shape[1])
        h = self.tr(self.patch(x) + self.src_pos, self.tok(y) + self.tgt_pos[:y.shape[1]],
                    tgt_mask=mask)
        return self.out(h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/stamps_caption")
    ap.add_argument("--seconds", type=float, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xt, ct = load(os.path.join(a.data, "train.tsv"))
    xv, cv = load(os.path.join(a.data, "valid.tsv"))
    vocab = ["<pad>", "<s>", "</s>"] + sorted({w for c in ct for w in c.split()})
    wid = {w: i for i, w in enumerate(vocab)}

    def encode(c):
        ids = [1] + [wid[w] for w in c.split()] + [2]
        return ids + [0] * (MAX_T + 1 - len(ids))

    yt = torch.tensor([encode(c) for c in ct])
    model = Nano(len(vocab))
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=0.01)
    t0, step = time.time(), 0
    while time.time() - t0 < a.seconds:
        idx = torch.randint(0, len(xt), (16,))
        y = yt[idx]
        logits = model(xt[idx], y[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y[:, 1:].reshape(-1),
                                           ignore_index=0, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    model.eval()
    y = torch.ones(len(xv), 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(MAX_T - 1):
            y = torch.cat([y, model(xv, y)[:, -1].argmax(-1, keepdim=True)], 1)
    hyps = []
    for row in y[:, 1:].tolist():
        words = []
        for i in row:
            if i == 2:
                break
            if i > 2:
                words.append(vocab[i])
        hyps.append(" ".join(words))
    refs = [[c] for c in cv]
    consts = [c for c, _ in Counter(ct).most_common(32)]
    best = max((metric_ref_pair(c, refs) for c in consts), key=lambda t: t[0])
    print("trained %d steps (%d samples, %.1f epochs) in %.0f s on %d thread(s)"
          % (step, step * 16, step * 16 / len(xt), a.seconds, a.threads))
    print("model:          CIDEr-D %.3f  BLEU-4 %.3f  exact %.3f"
          % (metrics_ref.cider_d(hyps, refs), metrics_ref.bleu4(hyps, refs),
             np.mean([h == c for h, c in zip(hyps, cv)])))
    print("best constant:  CIDEr-D %.3f  ('%s')" % (best[0], best[1]))
    return 0


def metric_ref_pair(c, refs):
    return metrics_ref.cider_d([c] * len(refs), refs), c


if __name__ == "__main__":
    sys.exit(main())
