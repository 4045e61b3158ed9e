#!/usr/bin/python3
"""bench_av_py.py: the Python side of bench_av (items/s on one core, this process).

  bench_av_py.py SECONDS AUDIO_16K_WAV AUDIO_8K_WAV VIDEO... [BVH...]

audio: python3-soundfile decoding + a numpy Kaldi fbank (80 mels, same recipe as
stages/audio/fbank.c), and soundfile + torchaudio.compliance.kaldi.fbank with one torch
thread (what OFASys-style loaders call). The 8 kHz file is resampled to 16 kHz by
torchaudio.functional.resample first. video: ffprobe (frame count) + ffmpeg (decode,
select the same frames as ofavideo, scale to 96x96 bicubic, rgb24) as subprocesses fed
through pipes, then a numpy patchify (P = 16). motion (.bvh arguments): the file's MOTION
block parsed by numpy (one float array of every value) and one window of 64 frames at a
step of 4 with positions scaled: the raw channels only, less work than ofa-motion's
rotation features. Prints "name items_per_s [note]" lines."""
import io, subprocess, sys, time
import numpy as np
import soundfile as sf
import torch, torchaudio

torch.set_num_threads(1)


def np_fbank(x, rate=16000, n_mels=80):
    x = x.astype(np.float64) * 32768.0
    win, shift = int(rate * 0.025), int(rate * 0.010)
    nfft = 1 << (win - 1).bit_length()
    T = 1 + (len(x) - win) // shift
    idx = np.arange(win)[None, :] + shift * np.arange(T)[:, None]
    f = x[idx]
    f = f - f.mean(axis=1, keepdims=True)
    f = np.concatenate([f[:, :1] * (1 - 0.97), f[:, 1:] - 0.97 * f[:, :-1]], axis=1)
    f = f * np.power(np.hanning(win), 0.85)  # numpy's hanning is the symmetric one
    p = np.abs(np.fft.rfft(f, n=nfft)) ** 2
    mel = lambda h: 1127.0 * np.log(1.0 + h / 700.0)
    lo, hi = mel(20.0), mel(rate / 2)
    d = (hi - lo) / (n_mels + 1)
    m = mel(rate / nfft * np.arange(nfft // 2))
    b = np.arange(n_mels)[:, None]
    left, c, right = lo + b * d, lo + (b + 1) * d, lo + (b + 2) * d
    w = np.maximum(0, np.minimum((m - left) / (c - left), (right - m) / (right - c)))
    w = np.pad(w, ((0, 0), (0, 1)))
    return np.log(np.maximum(p @ w.T, np.finfo(np.float32).eps)).astype(np.float32)


def rate_of(fn, seconds):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    seconds = float(sys.argv[1])
    wav16, wav8 = open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'rb').read()
    videos = [a for a in sys.argv[4:] if not a.endswith('.bvh')]
    bvhs = [a for a in sys.argv[4:] if a.endswith('.bvh')]

    def np_path(data):
        x, r = sf.read(io.BytesIO(data), dtype='float32')
        return np_fbank(x, r)

    def ta_path(data):
        x, r = sf.read(io.BytesIO(data), dtype='float32')
        w = torch.from_numpy(x).unsqueeze(0)
        if r != 16000:
            w = torchaudio.functional.resample(w, r, 16000)
        return torchaudio.compliance.kaldi.fbank(w * 32768.0, num_mel_bins=80, dither=0.0,
                                                 sample_frequency=16000)

    # Sanity: the numpy recipe agrees with torchaudio on the 16 kHz file.
    diff = float(np.abs(np_path(wav16) - ta_path(wav16).numpy()).max())
    print(f"audio_fbank_numpy {rate_of(lambda: np_path(wav16), seconds):.1f} 16k max|diff| vs torchaudio {diff:.1e}")
    print(f"audio_fbank_torchaudio {rate_of(lambda: ta_path(wav16), seconds):.1f} 16k")
    print(f"audio_fbank_torchaudio_8k {rate_of(lambda: ta_path(wav8), seconds):.1f} 8k->16k")

    for path in videos:
        data = open(path, 'rb').read()

        def video():
            F = int(subprocess.run(['ffprobe', '-v', 'error', '-select_streams', 'v:0',
                                    '-count_packets', '-show_entries', 'stream=nb_read_packets',
                                    '-of', 'csv=p=0', '-i', 'pipe:0'], input=data,
                                   capture_output=True, check=True).stdout.split()[0])
            N, S, P = 8, 96, 16
            idx = [((2 * k + 1) * F) // (2 * N) for k in range(N)]
            sel = '+'.join(f'eq(n\\,{i})' for i in sorted(set(idx)))
            out = subprocess.run(['ffmpeg', '-v', 'error', '-threads', '1', '-i', 'pipe:0',
                                  '-vf', f"select='{sel}',scale={S}:{S}:flags=bicubic",
                                  '-vsync', '0', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
                                  'pipe:1'], input=data, capture_output=True, check=True).stdout
            fr = np.frombuffer(out, np.uint8).reshape(-1, S, S, 3)
            g = S // P
            return fr.reshape(-1, g, P, g, P, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, P * P * 3)

        name = path.rsplit('/', 1)[-1]
        print(f"video_ffmpeg_subprocess {rate_of(video, seconds):.1f} {name}")

    for path in bvhs:
        try:
            text = open(path).read()
        except OSError as e:
            print(f"# motion: {e} (skipped)")
            continue

        def motion():
            head, body = text.split('MOTION', 1)
            lines = body.strip().split('\n', 2)
            frames = int(lines[0].split(':')[1])
            v = np.array(lines[2].split(), dtype=np.float32)
            m = v.reshape(frames, -1)
            w = m[0:64 * 4:4].copy()
            w[:, :3] *= 0.01
            return w

        name = path.rsplit('/', 1)[-1]
        print(f"motion_bvh_numpy {rate_of(motion, seconds):.1f} {name}")


main()
