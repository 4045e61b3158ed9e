/* bvh.h: BVH motion capture for the motion tier (ofa-motion): the reader, the feature
 * representation the model sees, and fixed-length windows.
 *
 * Reader: the HIERARCHY section (ROOT / JOINT / End Site blocks with OFFSET and CHANNELS)
 * and the MOTION section ("Frames: F", "Frame Time: dt", then F lines of one value per
 * channel). Strict where a silent guess would corrupt training: a joint without a
 * CHANNELS line, an unknown channel name, rotation channels that are not all three of
 * X/Y/Z, a frame line with too few or too many values, a value that is not a finite
 * number, fewer or more frame lines than "Frames:" says, or a file that ends inside the
 * hierarchy are refused with the line number.
 *
 * Features (what the task plan's bvh-parse -> rot-6d chain means), per frame:
 *   - each joint's position channels (the root's, in the CMU files), root-relative:
 *     the ground-plane coordinates (X, Z) minus those of the window's first frame, so a
 *     clip does not depend on where in the room it was captured; the height (Y) kept;
 *     all positions multiplied by pos_scale (default 1/100: the CMU files' units put a
 *     standing hip near 17, so positions stay below 1);
 *   - each joint's rotation as the 6-D representation of Zhou et al. (2019): the first
 *     two columns of its rotation matrix, R = R_a(a) R_b(b) R_c(c) for channels listed
 *     "a b c" (BVH's order: intrinsic, first listed outermost). Continuous and bounded in
 *     [-1, 1], unlike Euler angles, so no further normalisation is applied.
 * C = (position channels) + 6 * (joints with rotations). For CMU 01_01: 3 + 6*31 = 189.
 *
 *     bvh_t *b = bvh_parse(text, len, err, sizeof err);        // NULL + err when bad
 *     int C = bvh_feature_dim(b);
 *     float *win = malloc(T * C * sizeof(float));             // (T, C)
 *     bvh_window(b, start, T, 1, 0.01f, win);
 *     bvh_destroy(&b);
 */
#ifndef OFA_BVH_H
#define OFA_BVH_H

#include <stddef.h>
#include <stdint.h>

#define BVH_MAX_JOINTS 256
#define BVH_MAX_FRAMES 1000000

typedef enum {
    BVH_XPOS = 0, BVH_YPOS, BVH_ZPOS, BVH_XROT, BVH_YROT, BVH_ZROT
} bvh_channel_t;

typedef struct {
    char name[64];
    int parent;              /* index of the parent joint, -1 for the root */
    double offset[3];
    int nch;                 /* 0..6 */
    bvh_channel_t ch[6];     /* in the file's order */
    int first;               /* index of its first channel in a frame line */
} bvh_joint_t;

typedef struct {
    bvh_joint_t *joints;     /* (njoints), in file order (parents first) */
    int njoints;
    int nchannels;           /* values per frame line */
    int64_t nframes;
    double frame_time;       /* seconds */
    float *motion;           /* (nframes, nchannels), as in the file (degrees, units) */
} bvh_t;

/* Parses a BVH file held in memory (text need not be NUL-terminated). NULL with err
 * ("line 12: ...") on failure. The caller owns the result. */
bvh_t *bvh_parse(const char *text, size_t len, char *err, size_t errlen);
/* Frees it; accepts NULL and sets *self_p to NULL. */
void bvh_destroy(bvh_t **self_p);

/* Feature width C per frame (see above). */
int bvh_feature_dim(const bvh_t *self);

/* Number of windows of T frames taken every `stride` frames after keeping one frame in
 * `step` (step 4 turns 120 fps into 30 fps): 1 + (F' - T) / stride with
 * F' = ceil(F / step), and 1 when F' < T (that one window repeats the last frame). */
int64_t bvh_num_windows(const bvh_t *self, int T, int stride, int step);

/* Features of the window of T frames starting at (subsampled) frame `start` into out
 * (T, C). Frames past the end repeat the last one. Returns how many frames are real. */
int bvh_window(const bvh_t *self, int64_t start, int T, int step, float pos_scale, float *out);

#endif
