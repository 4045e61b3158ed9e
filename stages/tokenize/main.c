/* main.c: ofa-tokenize, the last tier's worker. It only wires the stage runtime
 * (common/stage.h) to tokstage_process (tokstage.h), which builds src/tgt/ref.
 *
 * Own flag: --bpe FILE, the merges file (default RUN_DIR/bpe.bin, which launch trains
 * with ofa-bpe-train before it starts the pipeline). */
#include "stage.h"
#include "tokstage.h"
#include "util.h"

#include <string.h>

typedef struct {
    char bpe[1200];
} s_flags_t;

static int s_extra(void *ctx, const char *flag, const char *value) {
    s_flags_t *f = ctx;
    if (!strcmp(flag, "--bpe")) {
        if (!value || !*value)
            util_fatal(NULL, "--bpe needs a file");
        snprintf(f->bpe, sizeof f->bpe, "%s", value);
        return 1;
    }
    return 0;
}

static int s_work(void *ctx, proto_msg_t *msg, char *err, size_t errlen) {
    return tokstage_process(ctx, msg, err, errlen);
}

int main(int argc, char **argv) {
    util_set_progname(argv[0]);
    s_flags_t flags = {""};
    stage_args_t a;
    stage_args_parse(&a, argc, argv,
                     "ofa-tokenize: last tier worker (task plan + sample -> src/tgt/ref)\n"
                     "  --bpe FILE   BPE merges (default RUN_DIR/bpe.bin)",
                     s_extra, &flags);
    if (!flags.bpe[0]) {
        if (!a.run_dir[0])
            util_fatal("give --bpe FILE or --run-dir DIR", "no BPE merges file");
        snprintf(flags.bpe, sizeof flags.bpe, "%s/bpe.bin", a.run_dir);
    }
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    tok_bpe_t *bpe = tok_bpe_load(flags.bpe, err, sizeof err);
    if (!bpe)
        util_fatal("launch trains it with ofa-bpe-train before starting the stages",
                   "cannot load the BPE: %s", err);
    tokstage_t *st = tokstage_new(plan, bpe, tokstage_warn_stderr, NULL);
    int rc = stage_worker_run(&a, s_work, st);
    tokstage_destroy(&st);
    tok_bpe_destroy(&bpe);
    plan_destroy(&plan);
    return rc;
}
