#!/usr/bin/python3
"""Reference outputs from PIL for tests/test_imgproc.c.

usage: pil_ref.py IMAGE FIT S   (FIT: decode | resize | center_crop | pad)
Writes the raw RGB bytes (H, W, 3) of PIL's result to stdout. 'decode' ignores S.
The fits are the ones OFA's transforms use: resize = Resize((S, S), BICUBIC);
center_crop = Resize(S) then CenterCrop(S) as torchvision computes them; pad = longer
side to S, pasted centred on black.
"""
import sys
from PIL import Image

path, fit, S = sys.argv[1], sys.argv[2], int(sys.argv[3])
im = Image.open(path).convert("RGB")
w, h = im.size
if fit == "resize":
    im = im.resize((S, S), Image.BICUBIC)
elif fit == "center_crop":
    short, long_ = min(w, h), max(w, h)
    new_long = int(S * long_ / short)
    size = (new_long, S) if w >= h else (S, new_long)
    im = im.resize(size, Image.BICUBIC)
    top = int(round((im.size[1] - S) / 2.0))
    left = int(round((im.size[0] - S) / 2.0))
    im = im.crop((left, top, left + S, top + S))
elif fit == "pad":
    short, long_ = min(w, h), max(w, h)
    new_short = max(1, int(S * short / long_))
    size = (S, new_short) if w >= h else (new_short, S)
    r = im.resize(size, Image.BICUBIC)
    im = Image.new("RGB", (S, S), (0, 0, 0))
    im.paste(r, ((S - size[0]) // 2, (S - size[1]) // 2))
elif fit != "decode":
    sys.exit("unknown fit " + fit)
sys.stdout.buffer.write(im.tobytes())
