#!/usr/bin/env bash
# Regenerates the audio, video and motion test fixtures under tests/data/{audio,video,motion}
# from Debian packages (see /work/shared/DATA.md). The fixtures are committed; this script
# documents where each byte came from and rebuilds them when a test needs a new one.
#
# Needs: asterisk-core-sounds-en-wav espeak-ng ffmpeg assimp-testmodels
#        tuxpaint-stamps-default opencv-doc python3-torchaudio (for the fbank reference).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
A=$root/tests/data/audio V=$root/tests/data/video M=$root/tests/data/motion
mkdir -p "$A" "$V" "$M"
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

# --- audio -------------------------------------------------------------------------
# Real recorded speech: an 8 kHz asterisk prompt, as shipped (PCM WAV), and the same
# recording as MP3 (decoded through FFmpeg, not libsndfile) and Ogg Vorbis.
cp /usr/share/asterisk/sounds/en/hello-world.wav "$A/hello_8k.wav"
ff -i "$A/hello_8k.wav" -c:a libmp3lame -b:a 24k "$A/hello_8k.mp3"
ff -i "$A/hello_8k.wav" -c:a libvorbis -q:a 2 -fflags +bitexact "$A/hello_8k.ogg"   # bitexact: fixed Ogg serial
# Synthesized speech: espeak-ng writes 22.05 kHz; kept as FLAC (stereo, to exercise the
# mono mix), and resampled to 16 kHz 16-bit WAV as the input of the fbank reference.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en -s 160 -w "$tmp/tts.wav" "the quick brown fox jumps over the dog"
ff -i "$tmp/tts.wav" -ac 2 -c:a flac "$A/tts_22k_stereo.flac"
ff -i "$tmp/tts.wav" -ar 16000 -ac 1 -c:a pcm_s16le "$A/tts_16k.wav"
# Reference: torchaudio.compliance.kaldi.fbank on the same int16 samples scaled to the
# int16 range (Kaldi's convention), 80 bins, dither 0, every other option at its default
# (25 ms / 10 ms, povey, pre-emphasis 0.97, power spectrum, snip_edges). File layout:
# int32 frames, int32 bins, then frames*bins float32, little-endian.
/usr/bin/python3 - "$A/tts_16k.wav" "$A/tts_16k.fbank" <<'PY'
import sys, wave, struct
import numpy as np, torch, torchaudio
w = wave.open(sys.argv[1])
assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
x = np.frombuffer(w.readframes(w.getnframes()), dtype='<i2').astype(np.float32)
f = torchaudio.compliance.kaldi.fbank(torch.from_numpy(x).unsqueeze(0), num_mel_bins=80,
                                      dither=0.0, sample_frequency=16000)
a = f.numpy().astype('<f4')
with open(sys.argv[2], 'wb') as o:
    o.write(struct.pack('<ii', *a.shape)); o.write(a.tobytes())
print('fbank reference', a.shape)
PY
# A second reference at another rate and Kaldi's default 23 bins: the asterisk prompt at
# its own 8 kHz (200-sample windows, 256-point FFT).
/usr/bin/python3 - "$A/hello_8k.wav" "$A/hello_8k_23.fbank" <<'PY'
import sys, wave, struct
import numpy as np, torch, torchaudio
w = wave.open(sys.argv[1])
assert w.getframerate() == 8000 and w.getsampwidth() == 2 and w.getnchannels() == 1
x = np.frombuffer(w.readframes(w.getnframes()), dtype='<i2').astype(np.float32)
f = torchaudio.compliance.kaldi.fbank(torch.from_numpy(x).unsqueeze(0), num_mel_bins=23,
                                      dither=0.0, sample_frequency=8000)
a = f.numpy().astype('<f4')
with open(sys.argv[2], 'wb') as o:
    o.write(struct.pack('<ii', *a.shape)); o.write(a.tobytes())
print('fbank reference', a.shape)
PY

# --- video -------------------------------------------------------------------------
# A real photo (the tuxpaint koala cut-out) moving right at 40 px/s over a flat blue
# background: 128x96, 10 fps, 2 s (20 frames), H.264 in MP4. The test finds the koala by
# its distance from the background colour and checks its centroid moves right.
ff -f lavfi -i "color=c=0x2050c0:s=128x96:r=10:d=2" -i \
   /usr/share/tuxpaint/stamps/animals/marsupials/koala.png \
   -filter_complex "[1:v]scale=-1:40[k];[0:v][k]overlay=x='4+40*t':y=28:format=auto,format=yuv420p" \
   -c:v libx264 -preset veryslow -crf 30 -g 10 -movflags +faststart "$V/koala_right.mp4"
# Real footage: the first 1.5 s (15 frames) of opencv-doc's vtest.avi, scaled to 192x144
# and re-encoded as MPEG-4 part 2 in AVI, to stay small.
ff -i /usr/share/doc/opencv-doc/examples/data/vtest.avi -t 1.5 -vf scale=192:144 \
   -c:v mpeg4 -q:v 6 -an "$V/vtest_short.avi"
# Zero-length video: an AVI whose header declares an MPEG-4 stream with no frame in it.
ff -f lavfi -i color=s=32x32:r=10:d=1 -frames:v 0 -c:v mpeg4 "$V/empty.avi"

# --- motion ------------------------------------------------------------------------
# CMU subject 1, clip 01 (assimp-testmodels): the whole hierarchy and the first 40
# frames, with the Frames: line rewritten to match.
src=/usr/share/assimp/models/BVH/01_01.bvh
awk -v n=40 '
  /^Frames:/ { print "Frames: " n; next }
  /^Frame Time:/ { print; body = 1; next }
  body { if (k++ < n) print; next }
  { print }' "$src" | tr -d '\r' > "$M/01_01_40f.bvh"
du -ch "$A"/* "$V"/* "$M"/* | tail -1
