/* bench_model_cpu: CPU training throughput of the model (forward, backward, clipping,
 * AdamW: one normal training step) for the nano and tiny shapes of
 * /work/shared/bench/torch_encdec_cpu.py, so the two can be compared within one run
 * (bench_model_cpu.sh prints both and the ratio).
 * Usage: bench_model_cpu [THREADS] [nano|tiny|all] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

static int s_bench(const char *size, int threads, int B, int S, int T) {
    char err[256];
    model_config_t c;
    if (model_config_preset(&c, size, 8192, err, sizeof err))
        util_fatal("check the size name", "%s", err);
    /* text-only input as the PyTorch bench: no image adapter in the step */
    c.max_src = S;
    c.max_tgt = T;
    backend_t *be = backend_cpu_new(threads);
    model_t *m = model_new(&c, be, 1, err, sizeof err);
    if (!m)
        util_fatal(NULL, "%s", err);
    int32_t *src = malloc(sizeof *src * B * S), *ti = malloc(sizeof *ti * B * T);
    int32_t *to = malloc(sizeof *to * B * T), *sl = malloc(sizeof *sl * B);
    util_rng_t r = {7};
    for (int i = 0; i < B * S; i++)
        src[i] = 5 + (int32_t)(util_rng_next(&r) % 8000);
    for (int i = 0; i < B * T; i++) {
        ti[i] = 5 + (int32_t)(util_rng_next(&r) % 8000);
        to[i] = 5 + (int32_t)(util_rng_next(&r) % 8000);
    }
    for (int i = 0; i < B; i++)
        sl[i] = S;
    model_batch_t b = {.B = B, .S = S, .T = T, .src_tok = src, .src_len = sl, .tgt_in = ti,
                       .tgt_out = to};
    int warm = 2, n = strcmp(size, "nano") ? 3 : 10;
    double t0 = 0;
    for (int it = 0; it < warm + n; it++) {
        if (it == warm)
            t0 = util_now();
        model_out_t o;
        if (model_forward(m, &b, &o, NULL, err, sizeof err))
            util_fatal(NULL, "%s", err);
        model_backward(m);
        model_clip_grad(m, 1.0);
        model_step(m, 1e-4f);
    }
    double dt = (util_now() - t0) / n;
    printf("ofa cpu   %-5s B=%d S=%d T=%d threads=%d step=%8.1f ms samples/s=%7.1f\n", size, B,
           S, T, threads, dt * 1e3, B / dt);
    fflush(stdout);
    model_destroy(&m);
    backend_destroy(&be);
    free(src), free(ti), free(to), free(sl);
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const char *which = argc > 2 ? argv[2] : "all";
    if (threads < 1) {
        fprintf(stderr, "bench_model_cpu: bad thread count '%s'\n", argv[1]);
        return 2;
    }
    if (!strcmp(which, "nano") || !strcmp(which, "all"))
        s_bench("nano", threads, 16, 64, 16);
    if (!strcmp(which, "tiny") || !strcmp(which, "all"))
        s_bench("tiny", threads, 16, 256, 32);
    return 0;
}
