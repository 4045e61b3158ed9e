/* bench_av.c: items/s of the audio and video tiers' libraries on one core, beside the
 * Python path measured in the same run (bench/bench_av_py.py, /usr/bin/python3).
 *
 *   bench_av [--seconds T] [--no-python]
 *
 * Audio: one clip per item, bytes -> (T, 80) log-mel (aud_features): the 2.7 s espeak
 * clip at 16 kHz (decode + fbank) and the 1.4 s asterisk prompt at 8 kHz (decode +
 * libswresample to 16 kHz + fbank). Video: one clip per item, bytes -> 8 frames of
 * 96x96 as (8*36, 768) patches (vid_process): the 2 s 128x96 H.264 koala clip and the
 * 1.5 s 192x144 MPEG-4 vtest cut. Run it under `taskset -c 0` to hold both sides to one
 * core; the libraries are single-threaded (FFmpeg decoders are opened with one thread). */
#include "audstage.h"
#include "util.h"
#include "vidproc.h"

#include <stdio.h>
#include <string.h>

#define SRC OFA_BENCH_SOURCE_DIR

static uint8_t *s_read(const char *rel, size_t *len) {
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/%s", SRC, rel);
    uint8_t *b = (uint8_t *)util_read_file(path, len, err, sizeof err);
    if (!b)
        util_fatal("run from a checkout with tests/data", "%s", err);
    return b;
}

static void s_audio(const char *rel, double seconds) {
    size_t len;
    uint8_t *data = s_read(rel, &len);
    aud_dec_t *d = aud_dec_new(NULL);
    fbank_t *fb = fbank_new(16000, 80);
    char err[256];
    int64_t n = 0, T = 0;
    double t0 = util_now();
    while (util_now() - t0 < seconds || n < 3) {
        float *feat;
        if (aud_features(d, fb, data, len, 0.0f, 0, &feat, &T, err, sizeof err) != 0)
            util_fatal(NULL, "%s: %s", rel, err);
        free(feat);
        n++;
    }
    double dt = util_now() - t0;
    printf("audio_fbank_c %.1f %s (%lld frames)\n", n / dt, rel, (long long)T);
    fbank_destroy(&fb);
    aud_dec_destroy(&d);
    free(data);
}

static void s_video(const char *rel, double seconds) {
    size_t len;
    uint8_t *data = s_read(rel, &len);
    vid_ctx_t *ctx = vid_ctx_new(NULL);
    uint8_t *patches = util_malloc(8 * 96 * 96 * 3);
    vid_info_t info;
    char err[256];
    int64_t n = 0;
    double t0 = util_now();
    while (util_now() - t0 < seconds || n < 3) {
        if (vid_process(ctx, data, len, 8, 96, 16, patches, NULL, &info, err, sizeof err) != 0)
            util_fatal(NULL, "%s: %s", rel, err);
        n++;
    }
    double dt = util_now() - t0;
    printf("video_c %.1f %s (%lld frames, %dx%d)\n", n / dt, rel, (long long)info.frames,
           info.w, info.h);
    free(patches);
    vid_ctx_destroy(&ctx);
    free(data);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    double seconds = 3.0;
    int python = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--no-python"))
            python = 0;
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: bench_av [--seconds T] [--no-python]\n");
            return 0;
        } else {
            util_fatal(NULL, "unknown argument '%s' (see --help)", argv[i]);
        }
    }
    printf("# items/s, one process; clips from tests/data\n");
    s_audio("tests/data/audio/tts_16k.wav", seconds);
    s_audio("tests/data/audio/hello_8k.wav", seconds);
    s_video("tests/data/video/koala_right.mp4", seconds);
    s_video("tests/data/video/vtest_short.avi", seconds);
    fflush(stdout);
    if (python) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_av_py.py %g "
                 "%s/tests/data/audio/tts_16k.wav %s/tests/data/audio/hello_8k.wav "
                 "%s/tests/data/video/koala_right.mp4 %s/tests/data/video/vtest_short.avi",
                 SRC, seconds, SRC, SRC, SRC, SRC);
        int rc = system(cmd);
        if (rc != 0)
            fprintf(stderr, "bench_av: the Python side failed (%d): needs python3-soundfile, "
                    "python3-torchaudio and the ffmpeg/ffprobe programs\n", rc);
    }
    return 0;
}
