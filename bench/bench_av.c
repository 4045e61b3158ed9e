/* bench_av.c: items/s of the audio and video tiers' libraries on one core, beside the
 * Python path measured in the same run (bench/bench_av_py.py, /usr/bin/python3).
 *
 *   bench_av [--seconds T] [--no-python]
 *
 * Audio: one clip per item, bytes -> (T, 80) log-mel (aud_features): the 2.7 s espeak
 * clip at 16 kHz (decode + fbank) and the 1.4 s asterisk prompt at 8 kHz (decode +
 * libswresample to 16 kHz + fbank). Video: one clip per item, bytes -> 8 frames of
 * 96x96 as (8*36, 768) patches (vid_process): the 2 s 128x96 H.264 koala clip and the
 * 1.5 s 192x144 MPEG-4 vtest cut. Motion: one BVH file per item, text -> parsed channels
 * -> one window of 64 frames at 30 fps as (64, C) features (bvh_parse + bvh_window, what
 * ofa-motion does per sample): the 40-frame fixture and, when assimp-testmodels is
 * installed, CMU's 01_01.bvh (2,751 frames). Run it under `taskset -c 0` to hold both sides to one
 * core; the libraries are single-threaded (FFmpeg decoders are opened with one thread). */
#include "audstage.h"
#include "bvh.h"
#include "util.h"
#include "vidproc.h"

#include <stdio.h>
#include <string.h>

#define SRC OFA_BENCH_SOURCE_DIR
#define S_CMU_BVH "/usr/share/assimp/models/BVH/01_01.bvh"

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

static void s_motion(const char *path, double seconds) {
    size_t len;
    char err[256];
    char *text = util_read_file(path, &len, err, sizeof err);
    if (!text) {
        printf("# motion: %s: %s (skipped)\n", path, err);
        return;
    }
    int64_t n = 0, F = 0;
    int C = 0;
    float *feat = NULL;
    double t0 = util_now();
    while (util_now() - t0 < seconds || n < 3) {
        bvh_t *b = bvh_parse(text, len, err, sizeof err);
        if (!b)
            util_fatal(NULL, "%s: %s", path, err);
        C = bvh_feature_dim(b);
        F = b->nframes;
        if (!feat)
            feat = util_malloc((size_t)64 * C * sizeof(float));
        bvh_window(b, 0, 64, 4, 0.01f, feat);
        bvh_destroy(&b);
        n++;
    }
    double dt = util_now() - t0;
    const char *name = strrchr(path, '/');
    printf("motion_bvh_c %.1f %s (%lld frames, %d features)\n", n / dt, name ? name + 1 : path,
           (long long)F, C);
    free(feat);
    free(text);
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
    s_motion(SRC "/tests/data/motion/01_01_40f.bvh", seconds);
    s_motion(S_CMU_BVH, seconds);
    fflush(stdout);
    if (python) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/bench_av_py.py %g "
                 "%s/tests/data/audio/tts_16k.wav %s/tests/data/audio/hello_8k.wav "
                 "%s/tests/data/video/koala_right.mp4 %s/tests/data/video/vtest_short.avi "
                 "%s/tests/data/motion/01_01_40f.bvh " S_CMU_BVH,
                 SRC, seconds, SRC, SRC, SRC, SRC, SRC);
        int rc = system(cmd);
        if (rc != 0)
            fprintf(stderr, "bench_av: the Python side failed (%d): needs python3-soundfile, "
                    "python3-torchaudio and the ffmpeg/ffprobe programs\n", rc);
    }
    return 0;
}
