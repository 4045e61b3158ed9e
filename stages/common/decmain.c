/* decmain.c: see decmain.h. */
#include "decmain.h"

#include "tokstage.h"
#include "util.h"

/* The tier's transform, then, with fuse_tokenize, the tokenize tier's at a sample's last
 * hop (its @route ends at this tier). */
typedef struct {
    const decmain_t *m;
    void *st;
    tokstage_t *tok;
} s_fused_t;

static int s_last_hop(const proto_msg_t *msg) {
    const char *route = proto_msg_get_str(msg, "@route");
    int n = 1;
    for (const char *c = route ? route : ""; *c; c++)
        n += *c == ',';
    return proto_msg_get_int(msg, "@hop", 0) == n - 1;
}

static int s_work(void *ctx, proto_msg_t *msg, char *err, size_t errlen) {
    s_fused_t *f = ctx;
    if (f->m->work_fn(f->st, msg, err, errlen) != 0)
        return -1;
    if (f->tok && s_last_hop(msg))
        return tokstage_process(f->tok, msg, err, errlen);
    return 0;
}

int decmain_run(int argc, char **argv, const decmain_t *m) {
    util_set_progname(argv[0]);
    stage_args_t a;
    stage_args_parse(&a, argc, argv, m->usage, m->extra_fn, m->opts);
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    /* A constructor with no reason to give (the image tier's) leaves err empty. */
    err[0] = 0;
    void *st = m->new_fn(plan, m->opts, err, sizeof err);
    if (!st)
        util_fatal(m->fail_hint, "%s%s", m->fail, err);
    s_fused_t f = {m, st, NULL};
    tok_bpe_t *bpe = NULL;
    if (plan->fuse_tokenize) {
        char path[1100];
        snprintf(path, sizeof path, "%s/bpe.bin", a.run_dir[0] ? a.run_dir : ".");
        if (!(bpe = tok_bpe_load(path, err, sizeof err)))
            util_fatal("fuse_tokenize: launch trains RUN/bpe.bin before the stages start",
                       "cannot load the BPE: %s", err);
        f.tok = tokstage_new(plan, bpe, tokstage_warn_stderr, NULL);
    }
    int rc = stage_worker_run(&a, s_work, &f);
    tokstage_destroy(&f.tok);
    tok_bpe_destroy(&bpe);
    m->destroy_fn(st);
    plan_destroy(&plan);
    return rc;
}
