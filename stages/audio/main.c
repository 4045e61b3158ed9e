/* main.c: ofa-audio, the audio tier's worker. It only wires the stage runtime
 * (common/stage.h) to audstage_process (audstage.h); see that header for what it does
 * to a sample.
 *
 * Own flags: --max-seconds S (refuse longer clips; default 600), --dither D (Kaldi
 * dither amplitude; default 0), --specaugment F,FW,T,TW (frequency masks, their widest
 * band, time masks, their longest span; training samples only; default none). */
#include "audstage.h"
#include "stage.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int s_extra(void *ctx, const char *flag, const char *value) {
    audstage_opts_t *o = ctx;
    if (!strcmp(flag, "--max-seconds")) {
        o->max_seconds = stage_flag_number(flag, value, 0.01, 1e6);
        return 1;
    }
    if (!strcmp(flag, "--dither")) {
        o->dither = (float)stage_flag_number(flag, value, 0, 1e4);
        return 1;
    }
    if (!strcmp(flag, "--specaugment")) {
        fbank_augment_t *a = &o->augment;
        char tail;
        if (!value || sscanf(value, "%d,%d,%d,%d%c", &a->freq_masks, &a->freq_width,
                             &a->time_masks, &a->time_width, &tail) != 4 ||
            a->freq_masks < 0 || a->freq_width < 0 || a->time_masks < 0 || a->time_width < 0)
            util_fatal(NULL, "--specaugment takes four non-negative integers F,FW,T,TW "
                       "(e.g. 2,27,2,40), got '%s'", value ? value : "");
        return 1;
    }
    return 0;
}

static int s_work(void *ctx, proto_msg_t *msg, char *err, size_t errlen) {
    return audstage_process(ctx, msg, err, errlen);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    audstage_opts_t opts = {0};
    stage_args_t a;
    stage_args_parse(&a, argc, argv,
                     "ofa-audio: audio tier worker (WAV/FLAC/Ogg/MP3... -> log-mel filterbank)\n"
                     "  --max-seconds S        refuse longer clips (600)\n"
                     "  --dither D             Kaldi dither amplitude, int16 units (0)\n"
                     "  --specaugment F,FW,T,TW  SpecAugment masks on training samples (none)",
                     s_extra, &opts);
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    audstage_t *st = audstage_new(plan, &opts, err, sizeof err);
    if (!st)
        util_fatal("check the plan's sample_rate= and n_mels=", "cannot set up the audio "
                   "tier: %s", err);
    int rc = stage_worker_run(&a, s_work, st);
    audstage_destroy(&st);
    plan_destroy(&plan);
    return rc;
}
