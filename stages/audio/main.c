/* main.c: ofa-audio, the audio tier's worker. It only wires the stage runtime
 * (common/stage.h) to audstage_process (audstage.h) through the main the decoder tiers
 * share (stages/common/decmain.h); see audstage.h for what it does to a sample.
 *
 * Own flags: --max-seconds S (refuse longer clips; default 600), --dither D (Kaldi
 * dither amplitude; default 0), --specaugment F,FW,T,TW (frequency masks, their widest
 * band, time masks, their longest span; training samples only; default none). */
#include "audstage.h"
#include "decmain.h"
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

static void *s_new(const plan_t *plan, void *opts, char *err, size_t errlen) {
    return audstage_new(plan, opts, err, errlen);
}

static int s_work(void *st, proto_msg_t *msg, char *err, size_t errlen) {
    return audstage_process(st, msg, err, errlen);
}

static void s_destroy(void *st) {
    audstage_t *self = st;
    audstage_destroy(&self);
}

int main(int argc, char **argv) {
    audstage_opts_t opts = {0};
    decmain_t m = {
        .usage = "ofa-audio: audio tier worker (WAV/FLAC/Ogg/MP3... -> log-mel filterbank)\n"
                 "  --max-seconds S        refuse longer clips (600)\n"
                 "  --dither D             Kaldi dither amplitude, int16 units (0)\n"
                 "  --specaugment F,FW,T,TW  SpecAugment masks on training samples (none)",
        .extra_fn = s_extra,
        .opts = &opts,
        .new_fn = s_new,
        .destroy_fn = s_destroy,
        .work_fn = s_work,
        .fail = "cannot set up the audio tier: ",
        .fail_hint = "check the plan's sample_rate= and n_mels=",
    };
    return decmain_run(argc, argv, &m);
}
