/* main.c: ofa-image, the image tier's worker. It only wires the stage runtime
 * (common/stage.h) to imgstage_process (imgstage.h); see that header for what it does
 * to a sample.
 *
 * Own flags: --fit resize|center_crop|pad (default resize, OFA's caption transform),
 * --max-pixels N (reject larger sources; default 64 Mpx), --no-dct-scaling. */
#include "imgstage.h"
#include "stage.h"
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

static int s_work(void *ctx, proto_msg_t *msg, char *err, size_t errlen) {
    return imgstage_process(ctx, msg, err, errlen);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    s_flags_t flags = {.fit = IMG_FIT_RESIZE};
    stage_args_t a;
    stage_args_parse(&a, argc, argv,
                     "ofa-image: image tier worker (JPEG/PNG -> resized patches)\n"
                     "  --fit resize|center_crop|pad   how an image becomes S x S (resize)\n"
                     "  --max-pixels N                 reject larger images (64 Mpx)\n"
                     "  --no-dct-scaling               decode JPEGs at full size always",
                     s_extra, &flags);
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    imgstage_t *st = imgstage_new(plan, flags.fit, &flags.opts);
    if (!st)
        util_fatal(NULL, "cannot start the JPEG decoder");
    int rc = stage_worker_run(&a, s_work, st);
    imgstage_destroy(&st);
    plan_destroy(&plan);
    return rc;
}
