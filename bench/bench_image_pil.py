#!/usr/bin/python3
"""PIL + torchvision side of bench_image: OFA's caption preprocessing on one core.

usage: bench_image_pil.py SECONDS S IMAGE...
Prints one line: "pil_torchvision IMAGES_PER_S IMAGES_PER_CPU_S" (or "pil_only ..." when
torchvision is missing: PIL decode + resize + numpy normalisation instead of
ToTensor/Normalize). The first rate is per second of wall time, the second per second
of this process's CPU time, which stays meaningful when other jobs share the cores.
The transform is the one OFA's caption task uses: RGB, Resize((S, S), BICUBIC),
ToTensor, Normalize(mean 0.5, std 0.5).
"""
import io
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
from PIL import Image

seconds, S, paths = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
blobs = [open(p, "rb").read() for p in paths]
try:
    import torch
    from torchvision import transforms
    torch.set_num_threads(1)
    tf = transforms.Compose([
        lambda im: im.convert("RGB"),
        transforms.Resize((S, S), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
    ])
    kind = "pil_torchvision"
except ImportError:
    import numpy as np

    def tf(im):
        a = np.asarray(im.convert("RGB").resize((S, S), Image.BICUBIC), dtype=np.float32)
        return (a / 255.0 - 0.5) / 0.5
    kind = "pil_only"

for b in blobs:  # warm-up
    tf(Image.open(io.BytesIO(b)))
n, t0, c0 = 0, time.perf_counter(), time.process_time()
while time.process_time() - c0 < seconds:
    tf(Image.open(io.BytesIO(blobs[n % len(blobs)])))
    n += 1
print(kind, n / (time.perf_counter() - t0), n / (time.process_time() - c0))
