/* motstage.h: the motion tier's work on one sample message, without sockets.
 *
 * For every column of the sample's task that fills a source MOTION slot, the field's
 * bytes (a BVH file's text, as bin or str) are parsed (bvh.h), one frame in `step` is
 * kept (120 fps CMU captures -> 30 fps with step 4), and one window of T frames is cut
 * out and turned into features: root-relative positions and 6-D joint rotations. The
 * field is replaced by an f32 tensor (T, C) and the int "<column>.frames" (how many of
 * the T frames are real; a clip shorter than T repeats its last frame) is added.
 *
 * Which window: the windows start every `stride` frames; a training sample (split
 * "train") takes the one a generator seeded by (plan seed, sample id) picks, so every
 * epoch of one sample sees the same window and different samples cover the clip; any
 * other sample takes the middle window. A pure function of (plan, seed, id), as the
 * design's determinism rule asks.
 *
 * A sample that cannot be processed is left for the caller to reject; the reason names
 * the column ("column mocap: line 12: joint LeftLeg has no CHANNELS line"). */
#ifndef OFA_MOTSTAGE_H
#define OFA_MOTSTAGE_H

#include "bvh.h"
#include "planfile.h"
#include "proto.h"

typedef struct {
    int window;              /* T; 0 = 64 */
    int stride;              /* 0 = T / 2 */
    int step;                /* 0 = 4 */
    float pos_scale;         /* 0 = 0.01 */
} motstage_opts_t;

typedef struct motstage_t motstage_t;

/* plan is borrowed (must outlive the stage); opts may be NULL. The caller owns the
 * result; never NULL. */
motstage_t *motstage_new(const plan_t *plan, const motstage_opts_t *opts);
void motstage_destroy(motstage_t **self_p);

/* Transforms msg in place. 0, or -1 with err. */
int motstage_process(motstage_t *self, proto_msg_t *msg, char *err, size_t errlen);

/* The window a sample takes out of nwin (see above). */
int64_t motstage_pick_window(int64_t nwin, int train, uint64_t seed, uint64_t sample_id);

/* What the tier does to one column's bytes, for a program that prepares a clip as the
 * tier would without a message (ofa-infer): the limits.bvh_frames check, parse, and the
 * window a sample of that split and id takes, as features into *out (T, C), malloc'd,
 * the caller frees; *C the features per frame, *real the frames that are real. 0, or -1
 * with err (the parser's reason, "line 12: ..."; no column name). */
int motstage_features(const motstage_t *self, const char *text, size_t len, int train,
                      uint64_t sample_id, float **out, int *C, int *real, char *err,
                      size_t errlen);
/* The settings in force (defaults filled in); borrowed from self. */
const motstage_opts_t *motstage_get_opts(const motstage_t *self);

/* One of ofa-motion's own flags (--window, --stride, --step, --pos-scale) into o: 1 when
 * it was one of them, 0 when not, -1 with err when its value is bad. */
int motstage_flag(motstage_opts_t *o, const char *flag, const char *value, char *err,
                  size_t errlen);
/* The same flags read out of an argv list (argv[0], the program, skipped; other flags
 * ignored): the plan's stages.motion.program, so that a program outside the pipeline
 * cuts the windows the plan's tier cuts. 0, or -1 with err. */
int motstage_opts_from_argv(motstage_opts_t *o, int argc, char *const *argv, char *err,
                            size_t errlen);

#endif
