/* vidstage.h: the video tier's work on one sample message, without sockets.
 *
 * For every column of the sample's task that fills a source VIDEO slot, the field's
 * bytes (bin, or str holding raw bytes, as the source put them) are demuxed and
 * decoded, N frames are sampled uniformly over the clip, scaled to S x S and cut into
 * P x P patches (vidproc.h). N is the slot's frames= (else the plan's, 8), S and P the
 * slot's image_size= / patch= (else the plan's). The field is replaced by a u8 tensor
 * (N*Np, P*P*3), frame-major, and the ints "<column>.grid" (patches per row of a frame)
 * and "<column>.frames" (N) are added.
 *
 * A sample that cannot be processed is left for the caller to reject; the reason names
 * the column ("column clip: no video stream in the mp3 container"). ofa-video's main.c
 * hands vidstage_process to the stage runtime. */
#ifndef OFA_VIDSTAGE_H
#define OFA_VIDSTAGE_H

#include "planfile.h"
#include "proto.h"
#include "vidproc.h"

typedef struct vidstage_t vidstage_t;

/* plan is borrowed (must outlive the stage); opts may be NULL. NULL with err when a
 * task asks for more frames than VID_MAX_SAMPLE or a size that is not a multiple of
 * its patch. The caller owns the result. */
vidstage_t *vidstage_new(const plan_t *plan, const vid_opts_t *opts, char *err,
                         size_t errlen);
void vidstage_destroy(vidstage_t **self_p);

/* Transforms msg in place. 0, or -1 with err. */
int vidstage_process(vidstage_t *self, proto_msg_t *msg, char *err, size_t errlen);

/* What the tier does to one column, for a program that prepares a clip as the tier
 * would without a message (ofa-infer):
 * - vidstage_geometry: N, S and P of the source slot `slot` of tp (the slot's frames=,
 *   image_size=, patch=, else tp's; N 8 when neither says). 0, or -1 with err naming
 *   the column when N exceeds VID_MAX_SAMPLE or S is not a multiple of P;
 * - vidstage_limits: the decoding limits the tier applies, opts (may be NULL) with what
 *   it leaves 0 taken from the plan's limits group. */
int vidstage_geometry(const taskplan_t *tp, const taskplan_slot_t *slot, int *frames,
                      int *size, int *patch, char *err, size_t errlen);
vid_opts_t vidstage_limits(const plan_t *plan, const vid_opts_t *opts);

#endif
