/* main.c: ofa-image, the image tier's worker. It only wires the stage runtime
 * (common/stage.h) to imgstage_process (imgstage.h) through the main the decoder tiers
 * share (stages/common/decmain.h); see imgstage.h for what it does to a sample.
 *
 * Own flags: --fit resize|center_crop|pad (default resize, OFA's caption transform),
 * --max-pixels N (reject larger sources; default 64 Mpx), --no-dct-scaling. */
#include "imgstage.h"
#include "decmain.h"
#include "util.h"

#include <errno.h>
#include <string.h>

typedef struct {
    img_fit_t fit;
    img_opts_t opts;
} s_flags_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_flags_t *f = ctx;
    if (!strcmp(flag, "--no-dct-scaling")) {
        f->opts.no_dct_scaling = true;
        return 2;
    }
    if (!strcmp(flag, "--fit")) {
        if (!value || img_fit_parse(value, &f->fit) != 0)
            util_fatal("--fit takes resize, center_crop or pad", "bad --fit '%s'",
                       value ? value : "");
        return 1;
    }
    if (!strcmp(flag, "--max-pixels")) {
        char *end;
        errno = 0;
        unsigned long long v = value ? strtoull(value, &end, 10) : 0;
        if (!value || !*value || *end || errno || v == 0)
            util_fatal(NULL, "--max-pixels takes a positive integer, got '%s'",
                       value ? value : "");
        f->opts.max_pixels = v;
        return 1;
    }
    return 0;
}

static void *s_new(const plan_t *plan, void *opts, char *err, size_t errlen) {
    (void)err, (void)errlen;
    s_flags_t *f = opts;
    return imgstage_new(plan, f->fit, &f->opts);
}

static int s_work(void *st, proto_msg_t *msg, char *err, size_t errlen) {
    return imgstage_process(st, msg, err, errlen);
}

static void s_destroy(void *st) {
    imgstage_t *self = st;
    imgstage_destroy(&self);
}

int main(int argc, char **argv) {
    s_flags_t flags = {.fit = IMG_FIT_RESIZE};
    decmain_t m = {
        .usage = "ofa-image: image tier worker (JPEG/PNG -> resized patches)\n"
                 "  --fit resize|center_crop|pad   how an image becomes S x S (resize)\n"
                 "  --max-pixels N                 reject larger images (64 Mpx)\n"
                 "  --no-dct-scaling               decode JPEGs at full size always",
        .extra_fn = s_extra,
        .opts = &flags,
        .new_fn = s_new,
        .destroy_fn = s_destroy,
        .work_fn = s_work,
        .fail = "cannot start the JPEG decoder",
    };
    return decmain_run(argc, argv, &m);
}
