/* imgstage.h: the image tier's work on one sample message, without sockets.
 *
 * For every column of the sample's task that fills a source IMAGE slot (imgtask.h), the
 * field's bytes (JPEG or PNG, as the source put them: bin, or str holding raw bytes)
 * are decoded, fitted to S x S and cut into patches; the field is replaced by a u8
 * tensor (Np, P*P*3) and the ints "<column>.grid" (patches per row),
 * "<column>.width" and "<column>.height" (the image's size in the file, which the
 * tokenize tier needs to turn pixel boxes into location bins) are added.
 *
 * A sample that cannot be processed is left for the caller to reject with the reason,
 * which names the column ("column img: corrupt or truncated JPEG: ..."). ofa-image's
 * main.c hands imgstage_process to the stage runtime. */
#ifndef OFA_IMGSTAGE_H
#define OFA_IMGSTAGE_H

#include "imgtask.h"
#include "planfile.h"
#include "proto.h"

typedef struct imgstage_t imgstage_t;

/* plan is borrowed (must outlive the stage). opts may be NULL (defaults). The caller
 * owns the result. */
imgstage_t *imgstage_new(const plan_t *plan, img_fit_t fit, const img_opts_t *opts);
void imgstage_destroy(imgstage_t **self_p);

/* Transforms msg in place. 0, or -1 with err (and msg unchanged but for columns already
 * done before the failing one). */
int imgstage_process(imgstage_t *self, proto_msg_t *msg, char *err, size_t errlen);

/* Samples and images processed so far. */
void imgstage_counts(const imgstage_t *self, uint64_t *samples, uint64_t *images);

#endif
