/* audstage.h: the audio tier's work on one sample message, without sockets.
 *
 * For every column of the sample's task that fills a source AUDIO slot, the field's
 * bytes (bin, or str holding raw bytes, as the source put them) are decoded (auddec.h),
 * mixed to mono, resampled to the slot's sample_rate= (else the plan's, 16 kHz) and
 * turned into a log-mel filterbank of the slot's n_mels= (else the plan's, 80) channels
 * (fbank.h). The field is replaced by an f32 tensor (frames, n_mels) and the int
 * "<column>.frames" (= frames) is added. On training samples (split "train") optional
 * SpecAugment masks are applied, a pure function of (plan seed, sample id).
 *
 * A sample that cannot be processed is left for the caller to reject; the reason names
 * the column ("column wav: truncated WAV: ..."). ofa-audio's main.c hands
 * audstage_process to the stage runtime. */
#ifndef OFA_AUDSTAGE_H
#define OFA_AUDSTAGE_H

#include "auddec.h"
#include "fbank.h"
#include "planfile.h"
#include "proto.h"

#include <stdbool.h>

typedef struct {
    double max_seconds;      /* refuse longer clips; 0 = 600 s */
    float dither;            /* Kaldi dither amplitude in int16 units; 0 = none */
    fbank_augment_t augment; /* all zero = no SpecAugment */
} audstage_opts_t;

typedef struct audstage_t audstage_t;

/* plan is borrowed (must outlive the stage); opts may be NULL. NULL when a task asks
 * for a sample rate / n_mels combination the filterbank cannot do. */
audstage_t *audstage_new(const plan_t *plan, const audstage_opts_t *opts, char *err,
                         size_t errlen);
void audstage_destroy(audstage_t **self_p);

/* Transforms msg in place. 0, or -1 with err. */
int audstage_process(audstage_t *self, proto_msg_t *msg, char *err, size_t errlen);

/* The whole chain on one clip, for tests and benchmarks: bytes -> (T, n_mels) in *feat
 * (malloc'd, the caller frees it), *T frames, at fbank_rate(fb). A clip shorter than one window is refused
 * ("too short"). */
int aud_features(aud_dec_t *dec, fbank_t *fb, const uint8_t *data, size_t len,
                 float dither, uint64_t dither_seed, float **feat, int64_t *T, char *err,
                 size_t errlen);

#endif
